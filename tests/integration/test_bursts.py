"""
Bursts over real sockets: what one read, one C{publish_many} or one HTTP
batch gives a subscriber arrives once and in order, whatever the other
subscribers do (stop reading, reset the connection, replay history), or
the subscriber is closed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from support.rawws import TEXT, RawWebSocket, frame
from twisted.internet import threads

from cluso_router.testing import WebSocketTestClient, connect_client, until


async def subscribed(server: Any, *channels: str) -> WebSocketTestClient:
    client = await connect_client(server.ws_url)
    await client.next_message()
    for n, channel in enumerate(channels):
        await client.request({"type": "subscribe", "channel": channel, "id": n + 1})
    return client


def address(server: Any) -> tuple[str, int]:
    host, port = server.url.split("//")[1].strip("/").split(":")
    return host, int(port)


@pytest_twisted.ensureDeferred
async def test_an_http_batch_is_published_in_order_as_one_burst(server: Any) -> None:
    """
    C{POST /api/events/<channel>?batch=1} with a JSON array publishes each
    element as one event, in order, to every subscriber; without C{batch}
    the same array is one event; a body that is not an array, or more than
    1000 events, is refused and publishes nothing.
    """
    a = await subscribed(server, "burst")
    b = await subscribed(server, "burst")
    url = server.url + "api/events/burst"

    answer = await treq.post(url + "?batch=1", json=list(range(200)))
    body = await answer.json()
    assert answer.code == 200, body
    assert body["data"] == {"channel": "burst", "events": 200, "delivered": 400, "failed": 0}
    for client in (a, b):
        events = [await client.next_message() for _ in range(200)]
        assert [e["data"] for e in events] == list(range(200))
        assert [e["seq"] for e in events] == list(range(1, 201))

    answer = await treq.post(url, json=[1, 2])
    assert (await answer.json())["data"]["delivered"] == 2
    assert (await a.next_message())["data"] == [1, 2]

    not_a_list = await treq.post(url + "?batch=1", json={"n": 1})
    assert not_a_list.code == 400
    assert "JSON array" in (await not_a_list.json())["error"]
    too_many = await treq.post(url + "?batch=1", json=list(range(1001)))
    assert too_many.code == 413
    assert server.service.router.position("burst").seq == 201
    await a.close()
    await b.close()


@pytest_twisted.ensureDeferred
async def test_a_burst_in_one_read_mixes_plain_and_conflatable_events_in_order(
    server: Any,
) -> None:
    """
    A publisher's 300 sends in one TCP write, alternating between a plain
    channel and a conflatable one, reach a subscriber of both that keeps
    reading: every event once, in publication order.
    """
    router = server.service.router
    router.conflate("state", lambda data: data["key"])
    reader = await subscribed(server, "plain", "state")
    host, port = address(server)

    def publish_burst() -> None:
        publisher = RawWebSocket(host, port, timeout=10)
        publisher.receive_json()
        burst = b"".join(
            frame(
                TEXT,
                json.dumps(
                    {"type": "send", "channel": "plain", "data": n}
                    if n % 2
                    else {"type": "send", "channel": "state", "data": {"key": n % 3, "n": n}}
                ).encode(),
            )
            for n in range(300)
        )
        publisher.sock.sendall(burst)
        publisher.close()

    await threads.deferToThread(publish_burst)
    got = [await reader.next_message() for _ in range(300)]
    order = [e["data"] if e["channel"] == "plain" else e["data"]["n"] for e in got]
    assert order == list(range(300))
    await reader.close()


@pytest_twisted.ensureDeferred
async def test_bursts_survive_a_slow_reader_and_a_reset_mid_burst(server: Any) -> None:
    """
    Twenty bursts of 100 5-KB events (10 MB, more than the kernel's
    buffers and the session's budget hold): a subscriber that never reads gets
    an in-order prefix and is then closed with 4008 (slow consumer); one
    that resets its connection during the first burst is dropped; the
    subscriber that reads gets all 2,000 once and in order.
    """
    router = server.service.router
    host, port = address(server)

    def connect_raw() -> RawWebSocket:
        ws = RawWebSocket(host, port, rcvbuf=4096, timeout=20)
        ws.receive_json()
        ws.send_json({"type": "subscribe", "channel": "big", "id": 1})
        ws.receive_json()
        return ws

    slow = await threads.deferToThread(connect_raw)
    resetting = await threads.deferToThread(connect_raw)
    reader = await subscribed(server, "big")
    pad = "x" * 5000

    received: list[Any] = []
    for burst in range(20):
        router.publish_many("big", [{"n": burst * 100 + n, "pad": pad} for n in range(100)])
        if burst == 0:
            await threads.deferToThread(resetting.reset)
        received += [await reader.next_message(timeout=10) for _ in range(100)]
    assert [e["seq"] for e in received] == list(range(1, 2001))
    assert [e["data"]["n"] for e in received] == list(range(2000))

    # The server closes with 4008 and, when the close frame is still stuck
    # behind unread data at the closing handshake's deadline, aborts: a
    # reset then ends what this reader gets.
    messages, code = await threads.deferToThread(slow.until_close, True)
    assert code in (4008, None)
    assert router.queue_counters.slow_consumer_closes == 1
    seqs = [m["seq"] for m in messages if m.get("channel") == "big"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) < 2000
    slow.close()
    await until(lambda: router.connection_count == 1)
    await reader.close()


@pytest_twisted.ensureDeferred
async def test_a_recovering_subscriber_gets_replay_and_burst_once_in_order(server: Any) -> None:
    """
    A subscriber that recovers from seq 5 while bursts are published around
    its subscribe gets every event after 5 exactly once, in order: the
    replay, then the bursts.
    """
    router = server.service.router
    first = await subscribed(server, "log")
    router.publish_many("log", list(range(50)))
    epoch = router.position("log").epoch
    await first.close()

    late = await connect_client(server.ws_url)
    await late.next_message()
    late.send_json(
        {"type": "subscribe", "channel": "log", "id": 9, "since": {"seq": 5, "epoch": epoch}}
    )
    router.publish_many("log", list(range(50, 150)))
    ack = await late.next_message()
    events = [await late.next_message() for _ in range(145)]
    router.publish_many("log", list(range(150, 250)))
    events += [await late.next_message() for _ in range(100)]

    assert ack["type"] == "response"
    assert ack["data"]["recovered"] is True
    assert [e["seq"] for e in events] == list(range(6, 251))
    assert [e["data"] for e in events] == list(range(5, 250))
    await late.close()
