"""
No value a client sends can poison a channel: what is not strict JSON is
refused at the door, over HTTP and WebSocket alike, and the channel, its
history, /metrics and /api/health carry on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq

from cluso_router.testing import connect_client


async def post_raw(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await treq.post(url, body, headers={"content-type": "application/json"})
    return response.code, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_http_publish_of_non_json_values_is_refused_and_takes_no_seq(server: Any) -> None:
    """
    NaN, Infinity, an overflowing number and a lone surrogate posted as
    event data are each a 400 saying why; none takes a seq, and a client
    recovering from the start gets every good event.
    """
    url = server.url + "api/events/build"
    assert (await post_raw(url, b'{"n": 1}'))[0] == 200
    for body in (b"NaN", b'{"x": Infinity}', b"[1e400]", b'"\\ud800"'):
        status, answer = await post_raw(url, body)
        assert status == 400, body
        assert answer["success"] is False
        assert "Invalid request" in answer["error"]
    assert (await post_raw(url, b'{"n": 2}'))[0] == 200

    response = await treq.get(server.url + "api/channels/build/history?since=0")
    history = json.loads(await response.content())["data"]
    assert history["seq"] == 2
    assert [event["data"] for event in history["events"]] == [{"n": 1}, {"n": 2}]

    client = await connect_client(server.ws_url)
    await client.next_message()
    ack = await client.request(
        {
            "type": "subscribe",
            "channel": "build",
            "id": 1,
            "since": {"seq": 0, "epoch": history["epoch"]},
        }
    )
    assert ack["data"]["recovered"] is True
    assert [(await client.next_message())["data"] for _ in range(2)] == [{"n": 1}, {"n": 2}]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_websocket_send_of_a_lone_surrogate_is_refused_and_nothing_breaks(
    server: Any,
) -> None:
    """
    A lone surrogate in C{send} data or in a channel name is refused with
    a reply naming the request; the connection, C{/metrics},
    C{/api/health} and C{server.info} all keep working.
    """
    client = await connect_client(server.ws_url)
    await client.next_message()
    client.protocol.sendMessage(b'{"type": "send", "channel": "chat", "data": "\\ud800", "id": 1}')
    reply = await client.next_message()
    assert (reply["id"], reply["code"]) == (1, "invalid_json")
    client.protocol.sendMessage(b'{"type": "send", "channel": "c\\udc00", "data": 1, "id": 2}')
    reply = await client.next_message()
    assert (reply["id"], reply["code"]) == (2, "invalid_json")

    info = await client.request({"type": "invoke", "channel": "server.info", "id": 3})
    assert "error" not in info
    for path in ("metrics", "api/health"):
        response = await treq.get(server.url + path)
        assert response.code == 200, path
        await response.content()
    await client.close()
