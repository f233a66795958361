"""
Servers for tests: the whole service in this process on a free loopback
port, or the real C{twistd cluso} as a child process.

Servers started here run without a token (C{--auth none}, allowed on
loopback) unless a test asks for one; their C{token} and C{headers} say
how to authenticate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import pytest

from cluso_router.testing import RunningServer, start_server

TEST_TOKEN = "test-token-0123456789"


def start_service(root: Path, **config: Any) -> RunningServer:
    """
    L{cluso_router.testing.start_server}: the caller stops it.
    """
    return start_server(root, **config)


async def serve(tmp_path: Path, **config: Any) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(root, **config)
    yield running
    await running.service.stopService()


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
    token: str | None = None

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "ws"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def address(self) -> tuple[str, int]:
        """
        The host and port it listens on, for raw sockets.
        """
        parts = urlsplit(self.url)
        assert parts.hostname is not None
        assert parts.port is not None
        return parts.hostname, parts.port

    @property
    def port(self) -> int:
        return self.address[1]

    def health(self) -> dict[str, Any]:
        """
        The C{data} of its C{GET /api/health} answer.
        """
        with urllib.request.urlopen(self.url + "api/health", timeout=5) as response:
            data: dict[str, Any] = json.load(response)["data"]
            return data


def rss_bytes(pid: int) -> int:
    """
    The resident memory of process C{pid}.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


_LISTENING = re.compile(r"listening on (http://\S+/)")


_TOKEN_URL = re.compile(r"[?#]token=(\S+)")


def start_child_server(
    args: list[str],
    cwd: Path,
    timeout: float = 20.0,
    auth: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ChildServer:
    """
    Run C{args} (a command starting the server on C{tcp:0}) and wait for the
    line that says where it listens.

    Unless C{auth}, C{--auth none} is added to C{args}; with it, the token
    is read from the URL the server logs. The child gets C{environ}
    (default: this process's environment).
    """
    if not auth:
        args = [*args, "--auth", "none"]
    env = dict(os.environ if environ is None else environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    log: list[str] = []
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        log.append(line)
        match = _LISTENING.search(line)
        if match:
            url = match.group(1)
        token = _TOKEN_URL.search(line)
        if url is not None and (token is not None or not auth):
            threading.Thread(target=_drain, args=(process.stdout, log), daemon=True).start()
            return ChildServer(process, url, log, unquote(token.group(1)) if token else None)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(log))


def _drain(stream: IO[str], log: list[str]) -> None:
    """
    Keep reading the child's output into C{log}, so a chatty server never
    blocks on a full pipe.
    """
    for line in stream:
        log.append(line)


def twistd_cluso(*options: str, listen: str = "tcp:0:interface=127.0.0.1") -> list[str]:
    """
    The command line of C{twistd -n cluso} (foreground, no pid file)
    listening on C{listen}, followed by C{options}.
    """
    return [python_tool("twistd"), "--pidfile=", "-n", "cluso", "--listen", listen, *options]


def start_twistd(cwd: Path, *options: str, auth: bool = False) -> ChildServer:
    """
    L{start_child_server} on C{twistd -n cluso} with C{options}, on a free
    loopback port.
    """
    return start_child_server(twistd_cluso(*options), cwd=cwd, auth=auth)


def list_sources(root: Path) -> subprocess.CompletedProcess[str]:
    """
    What C{twistd cluso --list-sources} prints for C{root}.
    """
    return subprocess.run(
        [python_tool("twistd"), "--pidfile=", "cluso", "--list-sources", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def stop_child_server(child: ChildServer, timeout: float = 10.0) -> int:
    child.process.terminate()
    try:
        return child.process.wait(timeout)
    finally:
        if child.process.poll() is None:
            child.process.kill()
