"""
A new user's first run, as the README tells it: the wheel built from this
checkout installed into a fresh virtualenv (dependencies from the package
index), then its C{cluso} command started in an empty git repository,
with a C{PATH} that holds nothing but that virtualenv and git, so no
ripgrep or other tool of this machine can help.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.rawws import RawWebSocket
from support.servers import ChildServer, start_child_server, stop_child_server

from cluso_router import __version__

REPO = Path(__file__).resolve().parents[2]
SIGN_IN = re.compile(r"(http://\S+/)#token=([A-Za-z0-9._~+/=-]+)")


def run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class FreshInstall:
    venv: Path
    #: The environment of a user whose PATH has this virtualenv and git only.
    environ: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [str(self.venv / "bin" / "cluso"), *args]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> FreshInstall:
    """
    This checkout's wheel (built from a copy of its files, so the checkout
    gets no build directory) installed into a new virtualenv.
    """
    work = tmp_path_factory.mktemp("first-run")
    source = work / "source"
    listed = run("git", "ls-files", "-z", "-co", "--exclude-standard", cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "wheels", source)
    [wheel] = (work / "wheels").glob("cluso_router-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)

    tools = work / "tools"
    tools.mkdir()
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed; run scripts/test (it installs git)")
    (tools / "git").symlink_to(git)
    home = work / "home"
    home.mkdir()
    environ = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{tools}",
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LANG": "C.UTF-8",
    }
    return FreshInstall(venv, environ)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """
    A git repository with one committed file and nothing else.
    """
    root = tmp_path / "project"
    root.mkdir()
    run("git", "init", "-q", cwd=root)
    (root / "notes.md").write_text("first line\nthe needle is here\n")
    run("git", "add", "notes.md", cwd=root)
    author = ["-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    run("git", *author, "commit", "-qm", "Notes", cwd=root)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def started(fresh: FreshInstall, repository: Path) -> Iterator[tuple[ChildServer, int]]:
    """
    The documented command, in the repository, on a free loopback port.
    """
    port = free_port()
    child = start_child_server(
        fresh.command("--listen", f"tcp:{port}:interface=127.0.0.1"),
        cwd=repository,
        auth=True,
        environ=fresh.environ,
        timeout=60,
    )
    yield child, port
    stop_child_server(child)


def search(port: int, token: str, query: str) -> list[dict[str, Any]]:
    """
    The C{search} events of one search started over the WebSocket.
    """
    ws = RawWebSocket("127.0.0.1", port, timeout=20, path=f"/ws?token={token}")
    try:
        assert ws.receive_json()["data"]["status"] == "connected"
        ws.send_json({"type": "subscribe", "channel": "search", "id": "s"})
        assert ws.receive_json()["data"]["status"] == "subscribed"
        start = {"type": "invoke", "id": 1, "channel": "search.start", "data": {"query": query}}
        ws.send_json(start)
        events = []
        while True:
            message = ws.receive_json()
            if message.get("type") == "response":
                assert "error" not in message, message
            elif message.get("type") == "event":
                events.append(message["data"])
                if message["data"]["done"]:
                    return events
    finally:
        ws.close()


def test_version_of_the_installed_command(fresh: FreshInstall) -> None:
    """
    The installed C{cluso --version} prints this checkout's version.
    """
    done = run(*fresh.command("--version"), env=fresh.environ)
    assert done.stdout.startswith(f"cluso-router {__version__}\n")


def test_first_run_searches_and_leaves_the_project_alone(
    fresh: FreshInstall, repository: Path, started: tuple[ChildServer, int]
) -> None:
    """
    Started as the README says, the server prints the URL that signs a
    browser in, searches with the ripgrep its own install brought
    (progress events, then the results), refuses a second start on its
    port in one line with a failing status, and leaves the repository as
    it found it.
    """
    child, port = started
    log = "".join(child.log)
    printed = SIGN_IN.search(log)
    assert printed is not None, log
    assert printed.group(1) in (f"http://localhost:{port}/", f"http://127.0.0.1:{port}/")
    token = printed.group(2)
    searching = f"Searching with {fresh.venv / 'bin' / 'rg'}"
    # Sources start after the sign-in block is printed; give search a moment.
    deadline = time.monotonic() + 20
    while searching not in "".join(child.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert searching in "".join(child.log), "".join(child.log)

    events = search(port, token, "needle")
    assert len(events) >= 2
    assert all(e["completed"] <= (e["total"] or e["completed"]) for e in events)
    assert events[-1]["completed"] == events[-1]["total"] == 1
    results = [(r["file"], r["line"], r["column"]) for e in events for r in e["results"]]
    assert results == [("notes.md", 2, 5)]

    second = subprocess.run(
        fresh.command("--listen", f"tcp:{port}:interface=127.0.0.1"),
        cwd=repository,
        env=fresh.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert second.stdout == ""
    [line] = second.stderr.splitlines()
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in line

    # The persistent token (a restart keeps it) is checked here once it exists:
    # stop, start again on the same port, and compare SIGN_IN's token group.

    assert stop_child_server(child) == 0
    assert run("git", "status", "--porcelain", "--ignored", cwd=repository).stdout == ""
    assert sorted(p.name for p in repository.iterdir()) == [".git", "notes.md"]
