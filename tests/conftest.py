"""
Shared fixtures: an in-process server on a free loopback port, and a way to
run the real C{twistd cluso} as a child process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from cluso_router.service import ClusoService, ServerConfig


@dataclass
class RunningServer:
    service: ClusoService
    url: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "ws"


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> Any:
    """
    A whole cluso-router service in this process, listening on a free port.
    """
    from twisted.internet import reactor

    root = tmp_path / "root"
    root.mkdir()
    service = ClusoService(
        ServerConfig(root=str(root), listen="tcp:0:interface=127.0.0.1"), reactor=reactor
    )
    service.startService()
    port = service.web.port
    assert port is not None
    yield RunningServer(service, f"http://127.0.0.1:{port.getHost().port}/")
    await service.stopService()


def python_tool(name: str) -> str:
    """
    The path of console script C{name} installed beside this interpreter;
    fails (never skips) when it is missing.
    """
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run the README's test command")
    return found


@dataclass
class ChildServer:
    process: subprocess.Popen[str]
    url: str
    log: list[str]

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "ws"


_LISTENING = re.compile(r"listening on (http://\S+/)")


def start_child_server(args: list[str], cwd: Path, timeout: float = 20.0) -> ChildServer:
    """
    Run C{args} (a command starting the server on C{tcp:0}) and wait for the
    line that says where it listens.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    log: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        log.append(line)
        match = _LISTENING.search(line)
        if match:
            return ChildServer(process, match.group(1), log)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(log))


def stop_child_server(child: ChildServer, timeout: float = 10.0) -> int:
    child.process.terminate()
    try:
        return child.process.wait(timeout)
    finally:
        if child.process.poll() is None:
            child.process.kill()


@pytest.fixture
def twistd_server(tmp_path: Path) -> Iterator[ChildServer]:
    """
    The real C{twistd -n cluso} in a child process, rooted at a fresh directory.
    """
    root = tmp_path / "root"
    root.mkdir()
    child = start_child_server(
        [
            python_tool("twistd"),
            "--pidfile=",
            "-n",
            "cluso",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        cwd=root,
    )
    yield child
    stop_child_server(child)
