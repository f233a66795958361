"""
The files source end to end: real watchdog on a temporary root, changes
made on disk (or through the API), events checked as a WebSocket client
subscribed to C{files} receives them.

Each check ends with a barrier: a file written after the action, whose own
event arrives after every event of the action (events leave in the order
their paths settle, and a path's quiet period starts when it is touched).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_twisted
from support.servers import start_service
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from cluso_router.service import ClusoService
from cluso_router.sources.files import FileWatcher
from cluso_router.testing import WebSocketTestClient, connect_client

Change = tuple[str, str]


@dataclass
class Watched:
    service: ClusoService
    watcher: FileWatcher
    client: WebSocketTestClient
    root: Path
    barriers: int = 0

    async def events_until(
        self, done: Callable[[list[Change]], bool], timeout: float = 15.0
    ) -> list[Change]:
        """
        The files events received until C{done} says enough.
        """
        collected: list[Change] = []
        deadline = time.monotonic() + timeout
        while not done(collected):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"gave up waiting; received {collected}")
            message = await self.client.next_message(remaining)
            if message.get("type") == "event" and message.get("channel") == "files":
                data = message["data"]
                assert set(data) == {"file", "event", "timestamp"}
                collected.append((data["file"], data["event"]))
        return collected

    async def barrier(self, directory: str = "") -> list[Change]:
        """
        Write a barrier file and return every event received before its own.
        """
        self.barriers += 1
        name = f"{directory}/~barrier-{self.barriers}" if directory else f"~barrier-{self.barriers}"
        (self.root / name).write_text("barrier")
        events = await self.events_until(lambda c: (name, "add") in c)
        return events[: events.index((name, "add"))]

    async def call(self, procedure: str, data: Any = None) -> Any:
        self.barriers += 1
        message = {"type": "invoke", "id": 1000 + self.barriers, "channel": procedure}
        if data is not None:
            message["data"] = data
        return await self.client.request(message, timeout=15)


@pytest_twisted.async_yield_fixture
async def watch() -> Any:
    """
    Starts a server running only the files source on a given root, with a
    client subscribed to files; stops them all afterwards.
    """
    running: list[Watched] = []

    async def start(root: Path, **config: Any) -> Watched:
        server = start_service(root, auth="none", sources=("files",), **config)
        service = server.service
        assert "files" in service.sources.started, service.sources.failed
        watcher = service.sources.started["files"].watcher
        assert isinstance(watcher, FileWatcher)
        await watcher.when_ready()
        client = await connect_client(server.ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "files", "id": 1})
        watched = Watched(service, watcher, client, root)
        running.append(watched)
        return watched

    yield start
    for watched in running:
        await watched.client.close()
        await watched.service.stopService()


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest_twisted.ensureDeferred
async def test_write_change_rename_mkdir_and_delete(tmp_path: Path, watch: Any) -> None:
    """
    Creating, rewriting (several times), renaming and deleting files and
    directory trees give chokidar's events with root-relative '/' paths:
    one event per path per burst, directories before their contents on the
    way in and after them on the way out.
    """
    root = make_root(tmp_path)
    w = await watch(root)

    (root / "new.txt").write_text("1")
    assert await w.barrier() == [("new.txt", "add")]

    for i in range(5):
        (root / "new.txt").write_text("x" * (i + 2))
    assert await w.barrier() == [("new.txt", "change")]

    os.rename(root / "new.txt", root / "renamed.txt")
    assert sorted(await w.barrier()) == [("new.txt", "unlink"), ("renamed.txt", "add")]

    # A new top-level directory gets its own watch once announced, and is
    # read again then; the barrier inside it arrives after what was there.
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "f.txt").write_text("f")
    assert await w.barrier("dir/sub") == [
        ("dir", "addDir"),
        ("dir/sub", "addDir"),
        ("dir/sub/f.txt", "add"),
    ]

    (root / "dir" / "sub" / "f.txt").write_text("deep change")
    assert await w.barrier("dir/sub") == [("dir/sub/f.txt", "change")]

    shutil.rmtree(root / "dir")
    removed = await w.barrier()
    assert sorted(removed[:3]) == [
        ("dir/sub/f.txt", "unlink"),
        ("dir/sub/~barrier-4", "unlink"),
        ("dir/sub/~barrier-5", "unlink"),
    ]
    assert removed[3:] == [("dir/sub", "unlinkDir"), ("dir", "unlinkDir")]

    (root / "renamed.txt").unlink()
    assert await w.barrier() == [("renamed.txt", "unlink")]


@pytest_twisted.ensureDeferred
async def test_editor_atomic_saves_are_one_change(tmp_path: Path, watch: Any) -> None:
    """
    Saving by writing a temporary file and renaming it over the original
    (as editors do), or by moving the original to a backup first, is one
    change of the real file, with nothing about the temporary names.
    """
    root = make_root(tmp_path)
    (root / "src").mkdir()
    target = root / "src" / "main.py"
    target.write_text("print(1)\n")
    w = await watch(root)

    temp = root / "src" / ".main.py.tmp.1234"
    temp.write_text("print(2)\n")
    os.replace(temp, target)
    assert await w.barrier("src") == [("src/main.py", "change")]

    backup = root / "src" / "main.py~"
    os.rename(target, backup)
    target.write_text("print(3)\n")
    backup.unlink()
    assert await w.barrier("src") == [("src/main.py", "change")]


@pytest_twisted.ensureDeferred
async def test_ignored_paths_are_not_announced(tmp_path: Path, watch: Any) -> None:
    """
    .git, node_modules, __pycache__, virtualenvs (found by pyvenv.cfg, also
    when one appears later), the root's .gitignore patterns and --ignore
    globs are never announced; editing .gitignore takes effect at once, and
    files it stops ignoring are announced as added.
    """
    root = make_root(tmp_path)
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "env1").mkdir()
    (root / "env1" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "src").mkdir()
    w = await watch(root, ignore=("*.tmp", "cache/"))

    for path in [
        "app.log",
        "src/deep.log",
        "build/out.js",
        "node_modules/pkg/index.js",
        "src/__pycache__/m.cpython-311.pyc",
        ".git/HEAD",
        "src/x.tmp",
        "cache/c.bin",
        "env1/lib/site.py",
    ]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    assert await w.barrier() == []
    assert await w.barrier("src") == []

    (root / "tools").mkdir()
    assert await w.barrier("tools") == [("tools", "addDir")]
    (root / "tools" / "venv2").mkdir()
    (root / "tools" / "venv2" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert await w.barrier("tools") == [
        ("tools/venv2", "addDir"),
        ("tools/venv2/pyvenv.cfg", "add"),
    ]
    (root / "tools" / "venv2" / "lib").mkdir()
    (root / "tools" / "venv2" / "lib" / "x.py").write_text("x")
    assert await w.barrier("tools") == []

    # No longer ignored: the .log files come into view as added.
    (root / ".gitignore").write_text("build/\n*.gen\n")
    came = [(".gitignore", "change"), ("app.log", "add"), ("src/deep.log", "add")]
    assert sorted(await w.events_until(lambda c: len(c) >= 3)) == came
    (root / "a.gen").write_text("generated")
    (root / "app.log").write_text("now watched")
    assert await w.barrier() == [("app.log", "change")]


@pytest_twisted.ensureDeferred
async def test_api_write_is_announced_once(tmp_path: Path, watch: Any) -> None:
    """
    A file written through the invoke API gives exactly one files event in
    total: the API's own, not a second one from the watcher.
    """
    root = make_root(tmp_path)
    w = await watch(root)

    reply = await w.call("files.writeFile", {"path": "api.txt", "content": "one"})
    assert "error" not in reply, reply
    events = await w.barrier()
    assert [e for e in events if e[0] == "api.txt"] == [("api.txt", "add")], events

    reply = await w.call("files.writeFile", {"path": "api.txt", "content": "two, longer"})
    assert "error" not in reply, reply
    events = await w.barrier()
    assert [e for e in events if e[0] == "api.txt"] == [("api.txt", "change")], events
    assert all(e[0] == "api.txt" for e in events), events


@pytest_twisted.ensureDeferred
async def test_burst_of_1000_creations_is_announced_in_full(tmp_path: Path, watch: Any) -> None:
    """
    1,000 files created as fast as possible in a new directory each get
    their add event (after the directory's addDir), none twice, none lost.
    """
    root = make_root(tmp_path)
    w = await watch(root)
    names = [f"burst/f{i:04}.txt" for i in range(1000)]

    def create() -> None:
        (root / "burst").mkdir()
        for name in names:
            (root / name).write_text(name)

    await deferToThread(create)
    events = await w.events_until(lambda c: len(c) >= 1001, timeout=60)
    await deferLater(reactor, 0.3, lambda: None)
    events += await w.barrier()
    assert events[0] == ("burst", "addDir")
    assert sorted(events[1:]) == [(name, "add") for name in names]


@pytest_twisted.ensureDeferred
async def test_file_watcher_procedures(tmp_path: Path, watch: Any) -> None:
    """
    fileWatcher.getWatched lists the root while watching; fileWatcher.stop
    silences the watcher; fileWatcher.start resumes it and announces what
    changed meanwhile; a path other than the root is refused.
    """
    root = make_root(tmp_path)
    (root / "before.txt").write_text("b")
    w = await watch(root)

    assert (await w.call("fileWatcher.getWatched"))["data"] == [str(root)]
    stopped = await w.call("fileWatcher.stop", str(root))
    assert stopped["data"] == {"success": True, "path": str(root)}
    assert (await w.call("fileWatcher.getWatched"))["data"] == []

    (root / "while-stopped.txt").write_text("w")
    (root / "before.txt").unlink()
    await deferLater(reactor, 0.3, lambda: None)

    started = await w.call("fileWatcher.start", {"projectPath": str(root)})
    assert started["data"] == {"success": True, "path": str(root)}
    assert await w.barrier() == [("before.txt", "unlink"), ("while-stopped.txt", "add")]
    assert (await w.call("fileWatcher.getWatched"))["data"] == [str(root)]

    refused = await w.call("fileWatcher.start", str(tmp_path))
    assert refused["code"] == "path_not_watched"
    assert str(root) in refused["error"]


@pytest_twisted.ensureDeferred
async def test_lost_events_are_recovered_by_a_rescan(tmp_path: Path, watch: Any) -> None:
    """
    When watchdog reports that the kernel's event queue overflowed, the
    tree is read again and whatever the watcher did not know is announced.
    """
    root = make_root(tmp_path)
    w = await watch(root)
    (root / "seen.txt").write_text("s")
    assert await w.barrier() == [("seen.txt", "add")]

    # What a lost event looks like from inside: the file is on disk, but
    # the watcher's index does not know it.
    del w.watcher.tracker.index["seen.txt"]
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    assert await w.events_until(lambda c: len(c) >= 1) == [("seen.txt", "add")]
    assert await w.barrier() == []
