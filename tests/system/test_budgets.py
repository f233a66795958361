"""
Memory budgets of the real server (C{twistd -n cluso} in a child process)
under floods that once grew it without bound: a history flood, a client
that pings and never reads, and one event bigger than a client's queue
budget sent to subscribers that do not read. Each test reports the
server's RSS growth (C{-s} shows it).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.rawws import CLOSE, PING, RawWebSocket, close_code, frame
from support.servers import ChildServer, rss_bytes, start_twistd, stop_child_server

MIB = 1024 * 1024


@pytest.fixture
def child(tmp_path: Path) -> Iterator[ChildServer]:
    server = start_twistd(
        tmp_path,
        "--sources",
        "",
        "--rate-limit",
        "0",
        "--history-max-bytes",
        str(16 * MIB),
        "--max-publish-body",
        str(10 * MIB),
    )
    yield server
    stop_child_server(server)


def settle(pid: int) -> int:
    """
    The RSS of C{pid} once it stopped moving (sampled until two readings
    a second apart agree within 1 MiB, at most five seconds).
    """
    last = rss_bytes(pid)
    for _ in range(5):
        time.sleep(1.0)
        now = rss_bytes(pid)
        if abs(now - last) < MIB:
            return now
        last = now
    return last


def test_a_history_flood_stays_within_the_history_budget(child: ChildServer) -> None:
    """
    2,000 sends of 60 KiB (120 MiB of events) on one channel leave the
    history at most its 16 MiB budget, and the server's RSS grows by well
    under the flood's size.
    """
    before = settle(child.process.pid)
    ws = RawWebSocket(*child.address, timeout=30)
    ws.receive_json()
    pad = "x" * (60 * 1024)
    for n in range(2000):
        ws.sock.sendall(
            frame(1, json.dumps({"type": "send", "channel": "flood", "data": [n, pad]}).encode())
        )
    ws.send_json({"type": "invoke", "id": "done", "channel": "server.info"})
    while ws.receive_json().get("id") != "done":
        pass
    after = settle(child.process.pid)
    kept = metric(child, "cluso_history_bytes")
    print(f"\nhistory flood: RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB, kept {kept:.0f} B")
    assert kept <= 16 * MIB
    assert after - before < 60 * MIB
    ws.close()


def test_a_client_that_pings_and_never_reads_is_closed(child: ChildServer) -> None:
    """
    A client flooding pings while never reading its pongs is closed once
    its answers fill its queue budget; the server's RSS stays bounded.
    """
    before = settle(child.process.pid)
    ws = RawWebSocket(*child.address, rcvbuf=4096, timeout=30)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    ping = frame(PING, b"p" * 125)
    closed = False
    deadline = time.monotonic() + 30
    sent = 0
    while time.monotonic() < deadline:
        try:
            ws.sock.sendall(ping * 256)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            closed = True
            break
        sent += 256
        if sent % 25_600 == 0 and child_has_closed(child):
            closed = True
            break
    after = settle(child.process.pid)
    print(f"\nping flood: {sent} pings, RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB")
    assert closed
    assert after - before < 30 * MIB
    ws.close()


def metric(child: ChildServer, name: str) -> float:
    """
    The value of an unlabelled metric of C{child}'s C{/metrics}.
    """
    with urllib.request.urlopen(child.url + "metrics", timeout=10) as response:
        text = response.read().decode()
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[1])


def child_has_closed(child: ChildServer) -> bool:
    return metric(child, "cluso_slow_consumer_closes_total") > 0


def test_one_event_bigger_than_the_queue_budget_closes_its_readers(child: ChildServer) -> None:
    """
    A 9 MiB event to 100 subscribers that do not read: each is closed with
    4008 instead of having the event buffered for it (the close frame is
    read as soon as the publish returns, as a client would), so the server
    grows by a few copies of the event, not a hundred.
    """
    subscribers = []
    for _ in range(100):
        ws = RawWebSocket(*child.address, rcvbuf=4096, timeout=30)
        ws.receive_json()
        ws.send_json({"type": "subscribe", "channel": "big", "id": 1})
        ws.receive_json()
        subscribers.append(ws)
    before = settle(child.process.pid)
    body = json.dumps({"blob": "y" * (9 * MIB)}).encode()
    request = urllib.request.Request(
        child.url + "api/events/big",
        data=body,
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        report = json.load(response)["data"]
    assert report["delivered"] == 0
    assert report["failed"] == 100
    for ws in subscribers:
        try:
            opcode, payload = ws.receive_frame()
        except ConnectionResetError as e:
            tail = "".join(child.log[-15:])
            message = f"reset before the close frame; the server's log ends:\n{tail}"
            raise AssertionError(message) from e
        assert opcode == CLOSE
        assert close_code(payload) == 4008
    after = settle(child.process.pid)
    print(f"\nbig frame: RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB")
    assert after - before < 60 * MIB
    for ws in subscribers:
        ws.close()
