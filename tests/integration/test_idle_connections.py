"""
Idle connections by the thousand: what one costs in memory, and how the
ping sweep's answers are handled.
"""

from __future__ import annotations

import gc
import socket
import struct
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest_twisted
from support.rawws import CLOSE, frame, upgrade_request
from twisted.internet import reactor, task
from twisted.web.http import HTTPChannel, Request

from cluso_router.testing import until

#: Python heap one idle subscribed connection may cost, in bytes (3,076
#: measured; it was 3,810 before the protocol let go of what the handshake
#: and its last frame left behind).
HEAP_BUDGET_PER_CONNECTION = 3_500

#: A child process holding N raw subscribed connections until its stdin closes.
_HOLDER = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
subscribe = b'{"type":"subscribe","channel":"idle","id":1}'
frame = bytes([0x81, 0x80 | len(subscribe)]) + bytes(4) + subscribe
held = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += s.recv(4096)
    s.sendall(frame)
    held.append(s)
sys.stdin.read()
"""


def subscribers(server: Any, channel: str) -> int:
    subscription = server.service.router.subscription(channel)
    return 0 if subscription is None else len(subscription.sessions)


@pytest_twisted.ensureDeferred
async def test_an_idle_subscribed_connection_costs_little_heap(server: Any) -> None:
    """
    A thousand idle connections, each subscribed to a channel, grow the
    server's Python heap by less than L{HEAP_BUDGET_PER_CONNECTION} bytes
    each: nothing of the handshake, the last frame's unmasker or per
    connection counters outlives the moment it served.
    """
    count = 1_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, "127.0.0.1", str(server.port), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            await until(lambda: subscribers(server, "idle") == count, 60)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(10)
    finally:
        tracemalloc.stop()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(own).compare_to(before.filter_traces(own), "filename")
    )
    assert grown / count < HEAP_BUDGET_PER_CONNECTION, f"{grown / count:,.0f} bytes per connection"
    await until(lambda: server.service.router.connection_count == 0)


@pytest_twisted.ensureDeferred
async def test_an_upgrade_leaves_no_garbage_for_the_collector(server: Any) -> None:
    """
    Once a connection is upgraded, the HTTP channel and request that
    carried its handshake are freed at once, not left in a reference cycle
    for the garbage collector: with the collector off, none of them remain
    after twenty upgrades.
    """

    def http_objects() -> int:
        return sum(isinstance(o, (HTTPChannel, Request)) for o in gc.get_objects())

    gc.collect()
    baseline = http_objects()
    gc.disable()
    try:
        clients = [RawClient(server) for _ in range(20)]
        await until(lambda: all(b"HTTP/1.1 101" in c.read() for c in clients))
        await until(lambda: server.service.router.connection_count == 20)
        assert http_objects() == baseline
    finally:
        gc.enable()
    for client in clients:
        client.socket.close()
    await until(lambda: server.service.router.connection_count == 0)


PONG, CONTINUATION = 0xA, 0x0


class RawClient:
    """
    A WebSocket client written by hand, to send frames exactly as split.
    """

    def __init__(self, server: Any) -> None:
        self.socket = socket.create_connection(("127.0.0.1", server.port))
        self.socket.setblocking(False)
        self.socket.sendall(upgrade_request("127.0.0.1", server.port))
        self.received = b""

    def read(self) -> bytes:
        try:
            while chunk := self.socket.recv(65536):
                self.received += chunk
        except BlockingIOError:
            pass
        return self.received

    def pings(self) -> int:
        return self.read().count(b"\x89\x00")


@pytest_twisted.ensureDeferred
async def test_pongs_count_as_heard_however_they_arrive(server: Any) -> None:
    """
    An empty pong alone in its read, one split over two reads, one with a
    payload, and one sent between the fragments of a message all count as
    heard: every client survives the next sweep, and the fragmented message
    is answered whole.
    """
    router = server.service.router
    sweeper = server.service.sweeper
    clients = [RawClient(server) for _ in range(4)]
    await until(lambda: router.connection_count == 4)
    await until(lambda: all(b"HTTP/1.1 101" in c.read() for c in clients))
    alone, split, payload, fragmented = clients
    request = b'{"type":"invoke","id":7,"channel":"server.info"}'
    fragmented.socket.sendall(frame(0x1, request[:20], fin=False))

    await sweeper.sweep()
    await until(lambda: all(c.pings() == 1 for c in clients))
    alone.socket.sendall(frame(PONG, b""))
    pong = frame(PONG, b"")
    split.socket.sendall(pong[:3])
    payload.socket.sendall(frame(PONG, b"hi"))
    fragmented.socket.sendall(frame(PONG, b""))
    await task.deferLater(reactor, 0.05, lambda: None)
    split.socket.sendall(pong[3:])
    fragmented.socket.sendall(frame(CONTINUATION, request[20:]))
    await until(lambda: all(router.session(s.connection_id).heard for s in router.sessions()))

    await sweeper.sweep()
    assert router.connection_count == 4
    await until(lambda: b'"id":7' in fragmented.read())
    for client in clients:
        client.socket.sendall(frame(CLOSE, struct.pack(">H", 1000)))
        client.socket.close()
    await until(lambda: router.connection_count == 0)
