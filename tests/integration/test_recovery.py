"""
History and recovery after a reconnect, and pattern subscriptions, over
real sockets.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
import treq

from cluso_router.testing import WebSocketTestClient, connect_client


async def client_for(server: Any) -> WebSocketTestClient:
    client = await connect_client(server.ws_url)
    await client.next_message()
    return client


@pytest_twisted.ensureDeferred
async def test_reconnect_with_since_replays_exactly_what_was_missed(server: Any) -> None:
    """
    A client that saw event 10, went away while 500 more were published and
    comes back with C{since} gets exactly those 500 in order, then live ones.
    """
    router = server.service.router
    client = await client_for(server)
    ack = await client.request({"type": "subscribe", "channel": "log", "id": 1})
    epoch = ack["data"]["epoch"]
    assert ack["data"]["seq"] == 0
    for n in range(10):
        router.publish("log", n)
    last_seen = [(await client.next_message())["seq"] for _ in range(10)][-1]
    assert last_seen == 10
    await client.close()

    for n in range(10, 510):
        router.publish("log", n)

    back = await client_for(server)
    ack = await back.request(
        {
            "type": "subscribe",
            "channel": "log",
            "id": 2,
            "since": {"seq": last_seen, "epoch": epoch},
        }
    )
    assert ack["data"]["recovered"] is True
    assert ack["data"]["replayed"] == 500
    assert (ack["data"]["seq"], ack["data"]["epoch"]) == (510, epoch)
    replayed = [await back.next_message() for _ in range(500)]
    assert [e["data"] for e in replayed] == list(range(10, 510))
    assert [e["seq"] for e in replayed] == list(range(11, 511))
    router.publish("log", "live")
    live = await back.next_message()
    assert (live["data"], live["seq"]) == ("live", 511)
    await back.close()


@pytest_twisted.ensureDeferred
async def test_wrong_epoch_is_not_recovered(server: Any) -> None:
    """
    With an epoch the server does not know (e.g. from before a restart) the
    ack says recovered: false and nothing is replayed.
    """
    server.service.router.publish("log", 1)
    client = await client_for(server)
    ack = await client.request(
        {"type": "subscribe", "channel": "log", "id": 1, "since": {"seq": 0, "epoch": "stale"}}
    )
    assert ack["data"]["recovered"] is False
    assert ack["data"]["replayed"] == 0
    server.service.router.publish("log", 2)
    assert (await client.next_message())["data"] == 2
    await client.close()


@pytest_twisted.ensureDeferred
async def test_publish_racing_the_replay_arrives_exactly_once(server: Any) -> None:
    """
    Events sent by another client at the same moment as a recovering
    subscribe are seen exactly once, in sequence order, with no gap.
    """
    router = server.service.router
    for n in range(50):
        router.publish("race", n)
    epoch = router.position("race").epoch
    publisher = await client_for(server)
    recovering = await client_for(server)
    for n in range(50, 100):
        publisher.send_json({"type": "send", "channel": "race", "data": n})
        if n == 60:
            recovering.send_json(
                {
                    "type": "subscribe",
                    "channel": "race",
                    "id": "r",
                    "since": {"seq": 20, "epoch": epoch},
                }
            )
    received = []
    while len(received) < 80:
        message = await recovering.next_message()
        if message["type"] == "event":
            received.append(message["seq"])
        else:
            assert message["data"]["recovered"] is True
    assert received == list(range(21, 101))
    await publisher.close()
    await recovering.close()


@pytest_twisted.ensureDeferred
async def test_history_over_http_matches_recovery(server: Any) -> None:
    """
    C{GET /api/channels/<channel>/history?since=S} returns the same events
    a recovering subscribe replays, and refuses a bad C{since}.
    """
    router = server.service.router
    for n in range(5):
        router.publish("build/web", {"n": n})
    url = server.url + "api/channels/build%2Fweb/history"
    response = await treq.get(url, params={"since": "2"})
    body = await response.json()
    assert response.code == 200
    data = body["data"]
    assert data["recovered"] is True
    assert data["seq"] == 5
    assert [e["data"]["n"] for e in data["events"]] == [2, 3, 4]
    assert [e["seq"] for e in data["events"]] == [3, 4, 5]
    response = await treq.get(url, params={"since": "two"})
    assert response.code == 400
    assert "since" in (await response.json())["error"]
    response = await treq.get(url, params={"since": "0", "epoch": "old"})
    assert (await response.json())["data"]["recovered"] is False


@pytest_twisted.ensureDeferred
async def test_pattern_subscriptions_over_the_wire(server: Any) -> None:
    """
    Prefix and wildcard subscriptions receive matching events once each;
    unsubscribing names the same channel and match; a bad match is refused.
    """
    router = server.service.router
    client = await client_for(server)
    ack = await client.request(
        {"type": "subscribe", "channel": "build.", "match": "prefix", "id": 1}
    )
    assert ack["data"] == {"status": "subscribed", "channel": "build.", "match": "prefix"}
    await client.request(
        {"type": "subscribe", "channel": "build..done", "match": "wildcard", "id": 2}
    )
    router.publish("build.web.done", "both")
    router.publish("build.web.started", "prefix only")
    router.publish("deploy.web.done", "neither")
    router.publish("build.api.done", "both again")
    got = [await client.next_message() for _ in range(3)]
    assert [(e["channel"], e["data"]) for e in got] == [
        ("build.web.done", "both"),
        ("build.web.started", "prefix only"),
        ("build.api.done", "both again"),
    ]
    ack = await client.request(
        {"type": "unsubscribe", "channel": "build.", "match": "prefix", "id": 3}
    )
    assert ack["data"]["status"] == "unsubscribed"
    router.publish("build.web.started", "gone")
    router.publish("build.x.done", "wildcard")
    assert (await client.next_message())["data"] == "wildcard"
    reply = await client.request({"type": "subscribe", "channel": "x", "match": "regex", "id": 4})
    assert reply["code"] == "invalid_match"
    reply = await client.request(
        {"type": "subscribe", "channel": "x", "since": {"seq": -1, "epoch": "e"}, "id": 5}
    )
    assert reply["code"] == "invalid_since"
    await client.close()
