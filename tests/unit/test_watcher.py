"""
The file watcher's parts without watchdog: ignore rules, the per-path
coalescing of changes (driven by a task.Clock over a real directory), the
tree scan, and the thread-to-reactor bridge.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from watchdog.events import (
    DirModifiedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

from cluso_router.sources.files.bridge import ThreadBridge
from cluso_router.sources.files.changes import ChangeTracker
from cluso_router.sources.files.ignore import IgnoreRules
from cluso_router.sources.files.scan import Snapshot, scan


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, path: str, event: str) -> None:
        self.events.append((path, event))

    def take(self) -> list[tuple[str, str]]:
        taken, self.events = self.events, []
        return taken


def tracker_on(
    root: Path, rules: IgnoreRules | None = None, delay: float = 0.05, max_delay: float = 1.0
) -> tuple[ChangeTracker, Clock, Recorder]:
    clock = Clock()
    recorder = Recorder()
    rules = rules or IgnoreRules()
    tracker = ChangeTracker(str(root), recorder, clock, rules, delay, max_delay)
    tracker.load(scan(str(root), rules))
    return tracker, clock, recorder


def test_ignore_rules() -> None:
    """
    Built-in directories are ignored at any depth, .gitignore patterns
    follow git's rules (directory-only patterns, anchors, negation), and a
    known virtualenv is ignored with everything in it.
    """
    rules = IgnoreRules(("*.log", "!keep.log", "build/", "/top.txt")).with_virtualenvs(
        {"tools/env"}
    )
    assert rules.ignored(".git", True)
    assert rules.ignored("a/node_modules/x/index.js", False)
    assert rules.ignored("pkg/__pycache__/m.pyc", False)
    assert rules.ignored(".venv/bin/python", False)
    assert rules.ignored("tools/env", True)
    assert rules.ignored("tools/env/bin/pip", False)
    assert not rules.ignored("tools/envoy.py", False)
    assert rules.ignored("x/debug.log", False)
    assert not rules.ignored("keep.log", False)
    assert rules.ignored("build", True)
    assert rules.ignored("src/build/out.js", False)
    assert not rules.ignored("build", False)
    assert rules.ignored("top.txt", False)
    assert not rules.ignored("src/top.txt", False)
    assert not rules.ignored("src/main.py", False)


def test_ignore_rules_load_gitignore_and_extra(tmp_path: Path) -> None:
    """
    The root's .gitignore and the --ignore patterns are both applied.
    """
    (tmp_path / ".gitignore").write_text("# comment\ndist/\n")
    rules = IgnoreRules.load(str(tmp_path), ["*.tmp"])
    assert rules.ignored("dist/a.js", False)
    assert rules.ignored("a/b.tmp", False)
    assert not rules.ignored("src/a.js", False)
    assert IgnoreRules.load(str(tmp_path / "missing")).patterns == ()


def test_scan_skips_ignored_trees_and_finds_virtualenvs(tmp_path: Path) -> None:
    """
    The scan lists files and directories root-relative with '/', does not
    descend into ignored directories, and reports virtualenvs (by their
    pyvenv.cfg) instead of listing them.
    """
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "a.py").write_text("a")
    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / "i.js").write_text("i")
    (tmp_path / "myenv" / "lib").mkdir(parents=True)
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr")
    snapshot = scan(str(tmp_path), IgnoreRules())
    assert set(snapshot.entries) == {"src", "src/pkg", "src/pkg/a.py"}
    assert snapshot.entries["src/pkg"][0] is True
    assert snapshot.entries["src/pkg/a.py"][0] is False
    assert snapshot.virtualenvs == {"myenv"}


def test_several_writes_coalesce_into_one_change(tmp_path: Path) -> None:
    """
    Writes to one path closer together than the delay give one change,
    announced once the path has been quiet for the delay.
    """
    target = tmp_path / "a.txt"
    target.write_text("0")
    tracker, clock, recorder = tracker_on(tmp_path)
    for i in range(5):
        target.write_text("x" * (i + 2))
        tracker.touch("a.txt")
        clock.advance(0.02)
    assert recorder.take() == []
    clock.advance(0.05)
    assert recorder.take() == [("a.txt", "change")]
    clock.advance(1)
    assert recorder.take() == []


def test_atomic_save_is_one_change_of_the_real_file(tmp_path: Path) -> None:
    """
    An editor's save (write a temporary file, rename it over the real one)
    is one change of the real file and nothing about the temporary one.
    """
    target = tmp_path / "a.txt"
    target.write_text("old")
    tracker, clock, recorder = tracker_on(tmp_path)
    temp = tmp_path / ".a.txt.swp"
    temp.write_text("new")
    tracker.touch(".a.txt.swp")
    os.replace(temp, target)
    tracker.touch(".a.txt.swp")
    tracker.touch("a.txt")
    clock.advance(0.1)
    assert recorder.take() == [("a.txt", "change")]


def test_touch_without_change_and_transient_files_are_silent(tmp_path: Path) -> None:
    """
    A path touched with nothing changed (same size, time and inode), and a
    file created and removed within one burst, announce nothing.
    """
    (tmp_path / "same.txt").write_text("s")
    tracker, clock, recorder = tracker_on(tmp_path)
    tracker.touch("same.txt")
    transient = tmp_path / "transient.txt"
    transient.write_text("t")
    tracker.touch("transient.txt")
    transient.unlink()
    tracker.touch("transient.txt")
    clock.advance(0.1)
    assert recorder.take() == []


def test_a_path_written_without_pause_is_still_announced(tmp_path: Path) -> None:
    """
    A file touched more often than the delay is announced at least once
    per maximum delay, not held back for as long as writes go on.
    """
    target = tmp_path / "log.txt"
    target.write_text("")
    tracker, clock, recorder = tracker_on(tmp_path, delay=0.05, max_delay=0.5)
    for i in range(30):
        target.write_text("x" * (i + 1))
        tracker.touch("log.txt")
        clock.advance(0.03)
    assert recorder.take().count(("log.txt", "change")) >= 1


def test_directories_before_children_and_children_before_removal(tmp_path: Path) -> None:
    """
    A new directory is announced before what is in it, even when a child's
    change is due first; removing a directory announces each known child's
    removal before the directory's own.
    """
    tracker, clock, recorder = tracker_on(tmp_path)
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f.txt").write_text("f")
    tracker.touch("d/e/f.txt")
    clock.advance(0.06)
    assert recorder.take() == [("d", "addDir"), ("d/e", "addDir"), ("d/e/f.txt", "add")]

    (tmp_path / "d" / "e" / "f.txt").unlink()
    (tmp_path / "d" / "e").rmdir()
    (tmp_path / "d").rmdir()
    tracker.touch("d")
    clock.advance(0.06)
    assert recorder.take() == [("d/e/f.txt", "unlink"), ("d/e", "unlinkDir"), ("d", "unlinkDir")]
    assert tracker.index == {}


def test_rename_is_unlink_then_add(tmp_path: Path) -> None:
    """
    Renaming a file announces the old name's unlink and the new name's add.
    """
    (tmp_path / "old.txt").write_text("x")
    tracker, clock, recorder = tracker_on(tmp_path)
    os.rename(tmp_path / "old.txt", tmp_path / "new.txt")
    tracker.touch("old.txt")
    tracker.touch("new.txt")
    clock.advance(0.06)
    assert recorder.take() == [("new.txt", "add"), ("old.txt", "unlink")]


def test_a_path_that_became_ignored_is_dropped_silently(tmp_path: Path) -> None:
    """
    When the rules come to ignore a known path, it leaves the index
    without an unlink.
    """
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.js").write_text("a")
    tracker, clock, recorder = tracker_on(tmp_path)
    tracker.rules = IgnoreRules(("out/",))
    (tmp_path / "out" / "a.js").write_text("changed")
    tracker.touch("out")
    tracker.touch("out/a.js")
    clock.advance(0.06)
    assert recorder.take() == []
    assert tracker.index == {}


def test_reconcile_announces_differences(tmp_path: Path) -> None:
    """
    Reconciling with a fresh scan announces, after the usual delay, what
    was missed: added, changed and removed paths.
    """
    (tmp_path / "kept.txt").write_text("k")
    (tmp_path / "gone.txt").write_text("g")
    (tmp_path / "edited.txt").write_text("e")
    tracker, clock, recorder = tracker_on(tmp_path)
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "edited.txt").write_text("edited")
    (tmp_path / "new.txt").write_text("n")
    tracker.reconcile(scan(str(tmp_path), tracker.rules))
    assert recorder.take() == []
    clock.advance(0.06)
    assert recorder.take() == [
        ("edited.txt", "change"),
        ("gone.txt", "unlink"),
        ("new.txt", "add"),
    ]
    assert tracker.pending == 0


def test_paused_tracker_announces_nothing_until_resumed(tmp_path: Path) -> None:
    """
    Touches before the first load wait for it; pausing drops pending
    touches and stops the timer.
    """
    clock = Clock()
    recorder = Recorder()
    tracker = ChangeTracker(str(tmp_path), recorder, clock, IgnoreRules())
    (tmp_path / "early.txt").write_text("e")
    tracker.touch("early.txt")
    clock.advance(1)
    assert recorder.take() == []
    tracker.load(Snapshot())
    clock.advance(0.06)
    assert recorder.take() == [("early.txt", "add")]

    tracker.pause()
    (tmp_path / "late.txt").write_text("l")
    tracker.touch("late.txt")
    clock.advance(1)
    assert recorder.take() == []
    assert clock.getDelayedCalls() == []


class ThreadCallRecorder:
    """
    A reactor stand-in that only records what is handed to callFromThread.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []
        self.lock = threading.Lock()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            self.calls.append(lambda: f(*args))


def test_bridge_hands_batches_to_the_reactor_only_through_call_from_thread(
    tmp_path: Path,
) -> None:
    """
    Events dispatched in watchdog's thread reach the deliver callback only
    when the reactor runs what was passed to callFromThread, many events in
    one batch; paths are root-relative with '/', refused ones and directory
    modifications are dropped, and a move touches both names.
    """
    reactor = ThreadCallRecorder()
    delivered: list[list[str]] = []
    root = str(tmp_path)
    bridge = ThreadBridge(
        reactor, root, lambda path, is_dir: not path.endswith(".skip"), delivered.append
    )

    def watchdog_thread() -> None:
        for i in range(100):
            bridge.dispatch(FileModifiedEvent(os.path.join(root, "d", f"f{i}.txt")))
        bridge.dispatch(FileCreatedEvent(os.path.join(root, "x.skip")))
        bridge.dispatch(DirModifiedEvent(os.path.join(root, "d")))
        bridge.dispatch(FileCreatedEvent("/elsewhere/y.txt"))
        bridge.dispatch(FileMovedEvent(os.path.join(root, "a.tmp"), os.path.join(root, "a.txt")))

    thread = threading.Thread(target=watchdog_thread)
    thread.start()
    thread.join()

    assert delivered == []
    assert len(reactor.calls) == 1
    reactor.calls.pop()()
    assert delivered == [[f"d/f{i}.txt" for i in range(100)] + ["a.tmp", "a.txt"]]

    bridge.dispatch(FileCreatedEvent(os.path.join(root, "later.txt")))
    assert len(reactor.calls) == 1
    reactor.calls.pop()()
    assert delivered[-1] == ["later.txt"]
