"""
Globs and tree walks cost time linear in the directories they visit, stay
within a budget of entries and seconds, stop when cancelled, and walk
chains of any depth without recursion.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.files import FileOperations, remove_tree
from cluso_router.workspace.glob import WalkBudget, glob_paths, relative_pattern
from cluso_router.workspace.paths import Workspace


def chain(root: Path, depth: int) -> Path:
    """
    A chain of C{depth} nested directories C{d/d/...} with a file C{x} at
    the bottom; made with relative C{mkdir}s, which work past PATH_MAX.
    """
    cwd = os.getcwd()
    try:
        os.chdir(root)
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Path("x").write_text("x")
    finally:
        os.chdir(cwd)
    return root


def glob(root: Path, pattern: str, budget: WalkBudget | None = None) -> list[str]:
    workspace = Workspace(str(root))
    start = workspace.resolve(".")
    return glob_paths(workspace, start, [relative_pattern(start, pattern)], budget or WalkBudget())


def test_repeated_double_stars_cost_what_one_costs(tmp_path: Path) -> None:
    """
    On a 40-level chain, ten C{**} segments find the same file as one, in
    about the same time (the walk visits each directory once per segment).
    """
    chain(tmp_path, 40)
    started = time.perf_counter()
    one = glob(tmp_path, "**/x")
    single = time.perf_counter() - started
    started = time.perf_counter()
    ten = glob(tmp_path, "/".join(["**"] * 10) + "/x")
    repeated = time.perf_counter() - started
    assert one == ten == ["/".join(["d"] * 40) + "/x"]
    assert repeated < max(1.0, 40 * single)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Path]:
    """
    A 1,500-level chain, removed afterwards without recursion (pytest's own
    clean-up of old temporary directories would otherwise fail on it).
    """
    yield chain(tmp_path, 1500)
    if (tmp_path / "d").exists():
        remove_tree(str(tmp_path / "d"), WalkBudget())


def test_a_1500_level_chain_is_walked_and_removed_without_recursion(deep: Path) -> None:
    """
    Globs, trees and directory removal over a chain deeper than Python's
    recursion limit work instead of failing.
    """
    tmp_path = deep
    assert glob(tmp_path, "**/x") == ["/".join(["d"] * 1500) + "/x"]
    files = FileOperations(Workspace(str(tmp_path)), run_blocking=_inline)
    tree = _result(files.get_tree(".", 2000))
    depth = 0
    node = tree
    while node.get("children"):
        node = node["children"][0]
        depth += 1
    assert depth == 1501
    top = tmp_path / "d"
    remove_tree(str(top), WalkBudget())
    assert not top.exists()


def test_a_walk_over_its_budget_fails_with_a_clear_error(tmp_path: Path) -> None:
    """
    A glob that would look at more entries than its budget allows is
    refused, saying to narrow the pattern.
    """
    for n in range(50):
        (tmp_path / f"f{n}").write_text("")
    with pytest.raises(ProcedureError, match="narrow it"):
        glob(tmp_path, "**/*", WalkBudget(entries=20))


def test_a_cancelled_walk_stops() -> None:
    """
    Setting the cancel flag stops a walk at its next entry.
    """
    budget = WalkBudget()
    budget.spend()
    budget.cancelled.set()
    with pytest.raises(ProcedureError, match="cancelled"):
        budget.spend()


@pytest_twisted.ensureDeferred
async def test_cancel_walks_and_cancelling_the_answer_stop_running_walks(tmp_path: Path) -> None:
    """
    A walk running in a thread stops when its answer is cancelled (the
    client went away) or when every walk is cancelled (the server stops).
    """
    files = FileOperations(Workspace(str(tmp_path)), reactor=reactor)
    started = threading.Event()

    def wait_for_cancel(budget: WalkBudget) -> str:
        started.set()
        if not budget.cancelled.wait(10):
            return "not cancelled"
        return "stopped"

    first = files._walk(wait_for_cancel, WalkBudget())
    while not started.is_set():
        await _tick()
    first.cancel()
    assert first.called
    started.clear()
    second = files._walk(wait_for_cancel, WalkBudget())
    while not started.is_set():
        await _tick()
    files.cancel_walks()
    assert await second == "stopped"
    assert not files._walks


async def _tick() -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.01, lambda: None)


def _inline(f: Any, *args: Any, **kwargs: Any) -> Any:
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(f, *args, **kwargs)


def _result(coroutine: Any) -> Any:
    from twisted.internet.defer import ensureDeferred
    from twisted.python.failure import Failure

    results: list[Any] = []
    ensureDeferred(coroutine).addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
