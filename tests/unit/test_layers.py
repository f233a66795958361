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
        "_heap",
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


def imported(path: Path, typing: bool = True) -> Iterator[tuple[list[str], int]]:
    """
    For each import statement of C{path} (function-level ones included, and
    those under C{if TYPE_CHECKING:} unless C{typing} is false): the names
    it may import, a module's and each C{module.name} it takes, with the line.
    """
    tree = ast.parse(path.read_text(), str(path))
    typing_only = (
        set()
        if typing
        else {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
    )
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            yield [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            yield [node.module, *names], node.lineno


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """
    The first component under C{cluso_router} of every module C{path}
    imports (C{TYPE_CHECKING} and function-level imports included), with
    the line.
    """
    for names, line in imported(path):
        parts: list[str] = []
        for name in names:
            part = name.split(".")[1] if name.startswith("cluso_router.") else None
            if part is not None and part not in parts:
                parts.append(part)
        for part in parts:
            yield part, line


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


def module_name(path: Path) -> str:
    parts = ("cluso_router", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """
    The modules of C{known} that C{path} imports when it runs (imports under
    C{if TYPE_CHECKING:} left out; function-level ones included).
    """
    return {name for names, _ in imported(path, typing=False) for name in names} & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    The import cycles of C{graph}: each a path that comes back to its start.
    """
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                found.append([*path[path.index(imported) :], imported])
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def test_no_module_imports_itself_through_others() -> None:
    """
    The modules' run-time imports form no cycle (a package's facade may
    import its modules, but then none of them imports the facade): each
    module can be read, and imported, after the ones it uses.
    """
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: runtime_imports(path, set(paths)) - {name} for name, path in paths.items()}
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    """
    A three-module loop is reported, a diamond is not.
    """
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) == []
