"""
C{cluso --workers 2} over a real redis-server: two processes behind one
port, clients spread over both, every client gets each event once, and a
SIGTERM stops everything with 1001 to every client.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.rawws import RawWebSocket
from support.servers import ChildServer, python_tool, start_child_server

from .test_backplane_redis import RedisServer, free_port

CLIENTS = 24


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    if server.process is not None:
        server.process.kill()
        server.process.wait(10)


def worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children]


def established(pid: int, port: int) -> int:
    """
    The TCP connections to C{port} process C{pid} holds.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def wait_for(condition, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_workers_share_a_port_and_every_client_gets_each_event_once(
    tmp_path: Path, redis: RedisServer
) -> None:
    """
    Clients opened one after the other land on both workers; three events
    published through one worker's HTTP API reach every client once, in
    order, with one numbering; SIGTERM to the supervisor closes every
    client with 1001 and ends both workers and the supervisor (status 0).
    """
    root = tmp_path / "root"
    root.mkdir()
    child: ChildServer = start_child_server(
        [
            python_tool("cluso"),
            "--workers",
            "2",
            "--redis",
            redis.url,
            "--redis-prefix",
            "workers-test:",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--sources",
            "",
            "--rate-limit",
            "0",
        ],
        cwd=root,
    )
    try:
        wait_for(lambda: "".join(child.log).count("listening on") == 2, "both workers")
        host, port = child.address
        workers = worker_pids(child.process.pid)
        assert len(workers) == 2
        clients = []
        for _ in range(CLIENTS):
            ws = RawWebSocket(host, port, timeout=10)
            assert ws.receive_json()["data"]["status"] == "connected"
            ws.send_json({"type": "subscribe", "channel": "news", "id": 1})
            assert ws.receive_json()["data"]["status"] == "subscribed"
            clients.append(ws)
        held = [established(pid, port) for pid in workers]
        assert sum(held) == CLIENTS
        assert all(held), f"the kernel gave every connection to one worker: {held}"

        for n in range(3):
            request = urllib.request.Request(
                child.url + "api/events/news",
                data=json.dumps({"n": n}).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert json.load(answer)["success"] is True
        for ws in clients:
            got = [ws.receive_json() for _ in range(3)]
            assert [(m["data"]["n"], m["seq"]) for m in got] == [(0, 1), (1, 2), (2, 3)]

        child.process.send_signal(signal.SIGTERM)
        for ws in clients:
            messages, code = ws.until_close(reset_ok=True)
            assert messages == []
            assert code == 1001
        assert child.process.wait(20) == 0
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        if child.process.poll() is None:
            child.process.kill()
        for pid in worker_pids(child.process.pid) if child.process.poll() is None else []:
            os.kill(pid, signal.SIGKILL)


def test_workers_without_redis_are_refused_in_one_line(tmp_path: Path) -> None:
    """
    --workers without --redis exits with status 2 and says what to add.
    """
    done = subprocess.run(
        [python_tool("cluso"), "--workers", "2", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers needs --redis" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
