"""
The package's layers import one way: each may use the layers below it and
never one above, so the router core can be read, tested and reused without
the web, and an event source cannot be reached from the core.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import cluso_router

PACKAGE = Path(cluso_router.__file__).parent

#: Lower layers first. The top-level helpers (strict JSON, clocks, the
#: access policy, interfaces) are usable from everywhere; the assembly
#: (service, tap, testing, the public facade) may use everything.
LAYERS = [
    {
        "_json",
        "_lazy",
        "_logfile",
        "_process",
        "_reactor",
        "_reuseport",
        "_time",
        "_version",
        "interfaces",
        "security",
        "sessions",
        "tokenstore",
    },
    {"router"},
    {"backplane"},
    {"ws"},
    {"web"},
    {"mcp"},
    {"workspace"},
    {"sources"},
    {"config", "service", "tap", "testing", "workers", "__init__", "__main__"},
]


def layer_of(part: str) -> int:
    for rank, names in enumerate(LAYERS):
        if part in names:
            return rank
    raise AssertionError(f"cluso_router.{part} is in no layer; add it to LAYERS")


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """
    The first component under C{cluso_router} of every module C{path}
    imports (C{TYPE_CHECKING} and function-level imports included), with
    the line.
    """
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "cluso_router":
                names = [f"cluso_router.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "cluso_router" and len(parts) > 1:
                yield parts[1], node.lineno


def test_every_module_imports_only_its_own_layer_and_those_below() -> None:
    """
    No module imports from a layer above its own: router < backplane < ws
    < web < mcp < workspace < sources < the assembly.
    """
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        rank = layer_of(own)
        for imported, line in imports(path):
            if imported != own and layer_of(imported) > rank:
                upward.append(f"{relative}:{line} imports cluso_router.{imported}")
    assert upward == []


def test_the_layer_table_knows_every_part_of_the_package() -> None:
    """
    Every package and top-level module has a layer, so a new one cannot
    slip past the check above.
    """
    parts = {p.stem for p in PACKAGE.glob("*.py")}
    parts |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    for part in parts:
        layer_of(part)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """
    The import reader finds plain, from-, facade and TYPE_CHECKING imports
    (so the layering test would fail on an upward one).
    """
    module = tmp_path / "sample.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "import cluso_router.web.site\n"
        "from cluso_router import _json, service\n"
        "if TYPE_CHECKING:\n"
        "    from cluso_router.sources.context import SourceContext\n"
        "def later():\n"
        "    from cluso_router.mcp import server\n"
    )
    assert [name for name, _ in imports(module)] == ["web", "_json", "service", "sources", "mcp"]
