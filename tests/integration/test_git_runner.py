"""
The one git runner: argument lists with the fixed options, a controlled
environment, a deadline that kills and reaps, and a clear error without git.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.git import SAFE_CONFIG, GitRunner


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def zombie_children() -> list[int]:
    """
    Children of this process that exited but were not reaped.
    """
    zombies = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            zombies.append(int(entry))
    return zombies


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest_twisted.ensureDeferred
async def test_arguments_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    git gets the safe options before the arguments (quoted paths off,
    implicit bare repositories refused, no fsmonitor, no ext:: transport,
    hooks only from the repository's own directory), runs in the workspace
    on the repository pinned when it was found, never prompts or starts an
    editor, and ignores a GIT_DIR inherited from the caller.
    """
    from twisted.internet import reactor

    monkeypatch.setenv("GIT_DIR", "/elsewhere/.git")
    fake = script(tmp_path, "git", 'printf "%s\\n" "$@"; pwd; env\n')
    runner = GitRunner(str(tmp_path), reactor=reactor, git=fake)
    runner.repository = {"GIT_DIR": "/pinned/.git", "GIT_WORK_TREE": "/pinned"}
    result = await runner.run("status", "--porcelain")
    lines = result.stdout.splitlines()
    assert lines[:12] == [
        *SAFE_CONFIG,
        "-c",
        f"core.hooksPath={os.devnull}",
        "status",
        "--porcelain",
    ]
    assert lines[12] == str(tmp_path)
    env = dict(line.split("=", 1) for line in lines[13:] if "=" in line)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_EDITOR"] == ":"
    assert env["GIT_DIR"] == "/pinned/.git"
    assert env["GIT_WORK_TREE"] == "/pinned"
    assert result.code == 0


@pytest_twisted.ensureDeferred
async def test_failure_text_is_stderr_then_stdout(tmp_path: Path) -> None:
    """
    check() fails with git's stderr verbatim, or its stdout when stderr is
    empty, or a fixed text when both are.
    """
    from twisted.internet import reactor

    cases = {
        "err": ("echo out; echo 'fatal: bad' >&2; exit 128\n", "fatal: bad\n"),
        "out": ("echo 'nothing to commit'; exit 1\n", "nothing to commit\n"),
        "none": ("exit 1\n", "Git command failed"),
    }
    for name, (body, message) in cases.items():
        runner = GitRunner(str(tmp_path), reactor=reactor, git=script(tmp_path, name, body))
        runner.repository = {"GIT_DIR": str(tmp_path / ".git"), "GIT_WORK_TREE": str(tmp_path)}
        with pytest.raises(ProcedureError) as info:
            await runner.check("x")
        assert info.value.message == message


@pytest_twisted.ensureDeferred
async def test_a_hung_git_is_killed_at_the_deadline_and_reaped(tmp_path: Path) -> None:
    """
    When the deadline (on an injected clock) passes, the process is
    killed, reaped (no zombie), and the call fails with a timeout error.
    """
    from twisted.internet import reactor

    pidfile = tmp_path / "pid"
    hung = script(tmp_path, "git", f"echo $$ > {pidfile}\nexec sleep 60\n")
    clock = Clock()
    runner = GitRunner(str(tmp_path), reactor=reactor, clock=clock, timeout=5)
    runner.git = hung
    runner.repository = {"GIT_DIR": str(tmp_path / ".git"), "GIT_WORK_TREE": str(tmp_path)}
    call = ensureDeferred(runner.run("fetch"))
    while not pidfile.exists() or not pidfile.read_text().strip():
        await _sleep(0.01)
    pid = int(pidfile.read_text())
    assert not call.called
    clock.advance(5)
    call.addTimeout(10, reactor)
    with pytest.raises(ProcedureError) as info:
        await call
    assert info.value.message == "git fetch timed out after 5 s"
    assert info.value.code == "timeout"
    assert not alive(pid)
    assert pid not in zombie_children()


@pytest_twisted.ensureDeferred
async def test_the_answer_does_not_wait_for_a_grandchild_holding_the_pipes(
    tmp_path: Path,
) -> None:
    """
    A killed git whose child (ssh, a hook) still holds stdout open answers
    at once instead of waiting for that child.
    """
    from twisted.internet import reactor

    pidfile = tmp_path / "pid"
    hung = script(tmp_path, "git", f"sleep 60 &\necho $! > {pidfile}\nwait\n")
    clock = Clock()
    runner = GitRunner(str(tmp_path), reactor=reactor, clock=clock, timeout=1, git=hung)
    runner.repository = {"GIT_DIR": str(tmp_path / ".git"), "GIT_WORK_TREE": str(tmp_path)}
    call = ensureDeferred(runner.run("push"))
    while not pidfile.exists() or not pidfile.read_text().strip():
        await _sleep(0.01)
    grandchild = int(pidfile.read_text())
    try:
        started = reactor.seconds()
        clock.advance(1)
        call.addTimeout(10, reactor)
        with pytest.raises(ProcedureError):
            await call
        assert reactor.seconds() - started < 5
        assert zombie_children() == []
    finally:
        os.kill(grandchild, signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_missing_git_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Without git on PATH, a call fails saying so, not with a traceback.
    """
    monkeypatch.setenv("PATH", str(tmp_path))
    runner = GitRunner(str(tmp_path))
    with pytest.raises(ProcedureError) as info:
        await runner.run("status")
    assert info.value.message == "git is not installed (no git executable on PATH)"


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)
