"""
Delivery correctness when frames go straight to the socket: slow readers get
every event once and in order through the buffered path, connections reset
mid-broadcast are cleaned up, and nobody else is disturbed.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from support.rawws import RawWebSocket
from twisted.internet import task, threads

from cluso_router.testing import connect_client

EVENTS = 3000
BATCH = 100


def open_raw_subscriber(host: str, port: int, rcvbuf: int | None) -> RawWebSocket:
    ws = RawWebSocket(host, port, rcvbuf=rcvbuf)
    assert ws.receive_json()["data"]["status"] == "connected"
    ws.send_json({"type": "subscribe", "channel": "load", "id": 1})
    assert ws.receive_json()["data"]["status"] == "subscribed"
    return ws


def read_sequence(ws: RawWebSocket, count: int) -> list[int]:
    return [ws.receive_json()["data"]["n"] for _ in range(count)]


@pytest_twisted.ensureDeferred
async def test_slow_readers_and_resets_mid_broadcast(server: Any) -> None:
    """
    With two fast clients, two readers whose receive buffers are tiny and
    who do not read until the end, and five clients that reset their
    connections part-way: fast and slow readers all get every event exactly
    once and in order, the slow ones through the session queue, and the
    reset ones leave no session behind.
    """
    from twisted.internet import reactor

    router = server.service.router
    host, port = server.url[len("http://") :].rstrip("/").split(":")
    fast = [await connect_client(server.ws_url) for _ in range(2)]
    for client in fast:
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "load", "id": 1})
    slow = [
        await threads.deferToThread(open_raw_subscriber, host, int(port), 2048) for _ in range(2)
    ]
    resetters = [
        await threads.deferToThread(open_raw_subscriber, host, int(port), None) for _ in range(5)
    ]
    assert router.subscriber_counts()["load"] == 9
    for session in router.sessions():
        # 6 MB of events outgrow the kernel's socket buffers, not this bound.
        session.max_queue_bytes = 32 * 1024 * 1024  # type: ignore[attr-defined]

    padding = "x" * 2000
    most_queued = 0
    for n in range(EVENTS):
        router.publish("load", {"n": n, "padding": padding})
        if n % BATCH == BATCH - 1:
            most_queued = max(most_queued, *(s.queued_bytes for s in router.sessions()))
            if resetters and n // BATCH % 3 == 0:
                resetters.pop().reset()
            await task.deferLater(reactor, 0, lambda: None)

    assert most_queued > 0, "the slow readers never went through the queue"
    for client in fast:
        got = [(await client.next_message())["data"]["n"] for _ in range(EVENTS)]
        assert got == list(range(EVENTS))
    for ws in slow:
        got = await threads.deferToThread(read_sequence, ws, EVENTS)
        assert got == list(range(EVENTS))
        ws.close()
    for ws in resetters:
        ws.reset()
    for _ in range(100):
        if router.connection_count == 2:
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    assert router.connection_count == 2
    assert router.subscriber_counts() == {"load": 2}
    for client in fast:
        await client.close()
