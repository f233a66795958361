"""
The git source: state read from git, and git events for commits, branch
switches and index changes made from a terminal (real git in a subprocess),
as a WebSocket client subscribed to C{git} receives them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.servers import start_service
from twisted.internet import reactor
from twisted.internet.task import deferLater

from cluso_router.config import ServerConfig
from cluso_router.service import ClusoService
from cluso_router.sources.git.service import (
    GitState,
    GitWatcher,
    NotARepository,
    describe_change,
    parse_status,
)
from cluso_router.testing import WebSocketTestClient, connect_client

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    if shutil.which("git") is None:
        pytest.fail("git is not installed; run the README's test command")
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd.parent)}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "Initial commit")
    return path


@dataclass
class Watching:
    service: ClusoService
    watcher: GitWatcher
    client: WebSocketTestClient

    async def next_git_events(self, count: int = 1, timeout: float = 15.0) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(events) < count:
            message = await self.client.next_message(max(0.01, deadline - time.monotonic()))
            if message.get("type") == "event" and message.get("channel") == "git":
                data = message["data"]
                assert set(data) == {"type", "message", "timestamp"}
                events.append((data["type"], data["message"]))
        return events

    async def no_more_events(self, seconds: float = 0.6) -> None:
        await deferLater(reactor, seconds, lambda: None)
        assert self.client.queue.pending == []


@pytest_twisted.async_yield_fixture
async def watch_git() -> Any:
    """
    Starts a server running only the git source (0.1 s delay) at a root,
    with a client subscribed to git; stops them afterwards.
    """
    running: list[Watching] = []

    async def start(root: Path) -> Watching:
        server = start_service(
            root, auth="none", sources=("git",), source_options={"git": {"git-delay": 0.1}}
        )
        service = server.service
        watcher = service.sources.started["git"].watcher
        assert isinstance(watcher, GitWatcher)
        await watcher.when_ready()
        client = await connect_client(server.ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "git", "id": 1})
        watching = Watching(service, watcher, client)
        running.append(watching)
        return watching

    yield start
    for watching in running:
        await watching.client.close()
        await watching.service.stopService()


def test_parse_status_reads_branch_commit_and_entries() -> None:
    """
    The porcelain v2 status gives the branch (None when detached), the
    commit (None before the first) and the entries, a rename's original
    path kept with its entry.
    """
    sha = "a" * 40
    output = "\0".join(
        [
            f"# branch.oid {sha}",
            "# branch.head feature/x",
            "# branch.upstream origin/feature/x",
            "1 M. N... 100644 100644 100644 1 2 staged.py",
            "1 .M N... 100644 100644 100644 1 1 edited.py",
            "2 R. N... 100644 100644 100644 1 1 R100 new.py",
            "old.py",
            "u UU N... 100644 100644 100644 100644 1 2 3 conflict.py",
            "",
        ]
    )
    branch, commit, entries = parse_status(output)
    assert (branch, commit) == ("feature/x", sha)
    assert len(entries) == 4
    assert entries[2].endswith("new.py\0old.py")
    state = GitState(branch, commit, "aaaaaaa", "Subject", entries)
    assert (state.staged, state.modified, state.unmerged) == (2, 1, 1)
    assert parse_status("# branch.oid (initial)\0# branch.head (detached)\0")[:2] == (None, None)


def test_describe_change_names_branch_commit_and_subject() -> None:
    """
    A branch switch wins over a new commit, which wins over index changes;
    messages name the branch, the short id and the subject; no change, no event.
    """
    base = GitState("main", "1" * 40, "1111111", "First", ())
    moved = GitState("main", "2" * 40, "2222222", "Second", ())
    other = GitState("topic", "2" * 40, "2222222", "Second", ())
    detached = GitState(None, "2" * 40, "2222222", "Second", ())
    staged = GitState("main", "1" * 40, "1111111", "First", ("1 A. N... 0 0 0 0 0 a.txt",))
    assert describe_change(base, base) is None
    assert describe_change(base, moved) == ("commit", "[main 2222222] Second")
    assert describe_change(base, other) == (
        "branch",
        "Switched to branch 'topic' at 2222222 Second",
    )
    assert describe_change(other, detached) == ("branch", "HEAD detached at 2222222 Second")
    assert describe_change(base, staged) == ("status", "On branch main: 1 staged, 0 modified")


@pytest_twisted.ensureDeferred
async def test_terminal_commits_checkouts_and_staging(tmp_path: Path, watch_git: Any) -> None:
    """
    Staging, committing, creating and switching branches and detaching HEAD
    from a terminal each publish one git event naming the branch, the short
    commit id and the subject; packing refs changes nothing and says nothing.
    """
    repo = make_repo(tmp_path / "repo")
    w = await watch_git(repo)

    (repo / "feature.py").write_text("x = 1\n")
    git(repo, "add", "feature.py")
    assert await w.next_git_events() == [("status", "On branch main: 1 staged, 0 modified")]

    git(repo, "commit", "-q", "-m", "Add feature\n\nWith a body.")
    short = git(repo, "rev-parse", "--short", "HEAD")
    assert await w.next_git_events() == [("commit", f"[main {short}] Add feature")]

    git(repo, "checkout", "-q", "-b", "topic")
    assert await w.next_git_events() == [
        ("branch", f"Switched to branch 'topic' at {short} Add feature")
    ]

    (repo / "feature.py").write_text("x = 2\n")
    git(repo, "commit", "-q", "-a", "-m", "Change feature")
    topic = git(repo, "rev-parse", "--short", "HEAD")
    assert await w.next_git_events() == [("commit", f"[topic {topic}] Change feature")]

    git(repo, "pack-refs", "--all")
    git(repo, "checkout", "-q", "main")
    assert await w.next_git_events() == [
        ("branch", f"Switched to branch 'main' at {short} Add feature")
    ]

    git(repo, "checkout", "-q", "--detach", "topic")
    assert await w.next_git_events() == [("branch", f"HEAD detached at {topic} Change feature")]
    await w.no_more_events()


@pytest_twisted.ensureDeferred
async def test_api_commit_is_announced_once(
    tmp_path: Path, watch_git: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A commit made through the server's git API is announced by the API
    alone; the watcher takes the new state in silently, and still reports
    the next commit made from a terminal.
    """
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    repo = make_repo(tmp_path / "repo")
    w = await watch_git(repo)

    (repo / "api.txt").write_text("api\n")
    reply = await w.client.request(
        {"type": "invoke", "id": 7, "channel": "git.commit", "data": {"message": "From the API"}},
        timeout=15,
    )
    assert "error" not in reply, reply
    api_short = git(repo, "rev-parse", "--short", "HEAD")
    (event,) = await w.next_git_events()
    assert event[0] == "commit"
    assert api_short in event[1]
    await w.no_more_events()

    (repo / "terminal.txt").write_text("t\n")
    git(repo, "add", "terminal.txt")
    git(repo, "commit", "-q", "-m", "From a terminal")
    short = git(repo, "rev-parse", "--short", "HEAD")
    events = await w.next_git_events()
    assert events == [("commit", f"[main {short}] From a terminal")]


@pytest_twisted.ensureDeferred
async def test_linked_worktree(tmp_path: Path, watch_git: Any) -> None:
    """
    In a linked worktree (its HEAD and index apart, refs shared with the
    main one) its own commits are reported; a commit on another branch in
    the main worktree is not.
    """
    repo = make_repo(tmp_path / "repo")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(worktree))
    w = await watch_git(worktree)

    (repo / "main-only.txt").write_text("m\n")
    git(repo, "add", "main-only.txt")
    git(repo, "commit", "-q", "-m", "On main")

    (worktree / "side.txt").write_text("s\n")
    git(worktree, "add", "side.txt")
    assert await w.next_git_events() == [("status", "On branch side: 1 staged, 0 modified")]
    git(worktree, "commit", "-q", "-m", "On side")
    short = git(worktree, "rev-parse", "--short", "HEAD")
    assert await w.next_git_events() == [("commit", f"[side {short}] On side")]
    await w.no_more_events()


def test_missing_git_fails_the_source_not_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Without a git executable the git source fails to start with a clear
    reason, and the server starts with its other sources.
    """
    repo = make_repo(tmp_path / "repo")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    service = ClusoService(
        ServerConfig(
            root=str(repo),
            listen="tcp:0:interface=127.0.0.1",
            auth="none",
            sources=("git", "files"),
        ),
        reactor=reactor,
    )
    service.startService()
    try:
        assert list(service.sources.started) == ["files"]
        assert "git is not installed" in service.sources.failed["git"]
    finally:
        service.stopService()


@pytest_twisted.ensureDeferred
async def test_not_a_repository_is_reported(tmp_path: Path) -> None:
    """
    Asked to watch a directory outside any repository, the git source says
    why it cannot, and keeps the server up.
    """
    plain = tmp_path / "plain"
    plain.mkdir()
    service = ClusoService(
        ServerConfig(
            root=str(plain), listen="tcp:0:interface=127.0.0.1", auth="none", sources=("git",)
        ),
        reactor=reactor,
    )
    service.startService()
    try:
        watcher = service.sources.started["git"].watcher
        assert isinstance(watcher, GitWatcher)
        with pytest.raises(NotARepository, match="not a git repository"):
            await watcher.when_ready()
        assert service.port is not None
    finally:
        await service.stopService()
