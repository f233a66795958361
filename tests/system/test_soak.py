"""
A bounded soak: 20,000 connect-subscribe-disconnect cycles against the real
server in a child process leave no session and no channel behind, and its
memory where it was.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from support.rawws import CLOSE, TEXT, frame, upgrade_request
from support.servers import ChildServer, rss_bytes, start_twistd, stop_child_server

CYCLES = 20_000
WARM_UP = 1_000
IN_FLIGHT = 6
CHANNELS = 1_000


def cycle(port: int, channel: str) -> None:
    """
    Connect, subscribe, see the acknowledgement, close cleanly.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(upgrade_request("127.0.0.1", port))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, "closed during the handshake"
            received += chunk
        assert received.startswith(b"HTTP/1.1 101"), received[:200]
        subscribe = json.dumps({"type": "subscribe", "channel": channel, "id": 1}).encode()
        sock.sendall(frame(TEXT, subscribe) + frame(CLOSE, struct.pack("!H", 1000)))
        while chunk := sock.recv(65536):
            received += chunk
        assert b'"status":"subscribed"' in received, received[-300:]


def run_cycles(port: int, count: int, offset: int) -> None:
    """
    C{count} cycles, L{IN_FLIGHT} at a time; fails with the first error.
    """
    numbers = iter(range(offset, offset + count))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while not errors:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            try:
                cycle(port, f"soak-{n % CHANNELS}")
            except BaseException as e:
                errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(IN_FLIGHT)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


def settled(child: ChildServer) -> dict[str, Any]:
    """
    The server's health once the last closing handshakes are done.
    """
    deadline = time.monotonic() + 10
    while (state := child.health())["connections"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return state


def test_connect_subscribe_disconnect_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    """
    After a warm-up of 1,000 cycles, 20,000 more (six at a time, over 1,000
    channel names) leave zero sessions and zero channel entries, and the
    server's resident memory within 10 MiB of where it was before them.
    """
    child = start_twistd(tmp_path, "--sources", "")
    try:
        port = child.port
        run_cycles(port, WARM_UP, 0)
        settled(child)
        before = rss_bytes(child.process.pid)
        started = time.monotonic()
        run_cycles(port, CYCLES, WARM_UP)
        elapsed = time.monotonic() - started
        state = settled(child)
        after = rss_bytes(child.process.pid)
    finally:
        stop_child_server(child)
    print(
        f"{CYCLES} cycles in {elapsed:.1f} s ({CYCLES / elapsed:.0f}/s); "
        f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
    )
    assert state["connections"] == 0
    assert state["channels"] == {}
    assert abs(after - before) < 10 * 1024 * 1024
