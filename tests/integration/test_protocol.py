"""
The JSON dialect over real loopback sockets: greeting, acks, events,
procedure calls, client sends, and every kind of bad input.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
import treq

from cluso_router.testing import WebSocketTestClient, connect_client

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def connected(server: Any) -> tuple[WebSocketTestClient, dict[str, Any]]:
    client = await connect_client(server.ws_url)
    greeting = await client.next_message()
    return client, greeting


async def assert_still_works(client: WebSocketTestClient) -> None:
    reply = await client.request({"type": "subscribe", "channel": "probe", "id": "probe"})
    assert (reply["data"]["status"], reply["data"]["channel"]) == ("subscribed", "probe")


@pytest_twisted.ensureDeferred
async def test_greeting_carries_connection_id_and_root(server: Any) -> None:
    """
    The first frame is the original server's greeting, without an id.
    """
    client, greeting = await connected(server)
    assert greeting["type"] == "response"
    assert "id" not in greeting
    data = greeting["data"]
    assert data["status"] == "connected"
    assert re.match(r"^conn-\d+-[0-9a-z]+$", data["connectionId"])
    assert data["cwd"] == server.service.config.root
    await client.close()


@pytest_twisted.ensureDeferred
async def test_subscribe_ack_echoes_id_including_zero_and_absent(server: Any) -> None:
    """
    Acks echo the request's id unchanged (0 stays the number 0) and carry no
    id key when the request had none; subscribing twice is fine.
    """
    client, _ = await connected(server)
    client.send_json({"type": "subscribe", "channel": "files", "id": 0})
    reply = await client.next_message()
    assert (reply["type"], reply["id"]) == ("response", 0)
    assert reply["data"]["status"] == "subscribed"
    assert reply["data"]["channel"] == "files"
    client.send_json({"type": "subscribe", "channel": "files"})
    reply = await client.next_message()
    assert "id" not in reply
    assert reply["data"]["status"] == "subscribed"
    client.send_json({"type": "unsubscribe", "channel": "files", "id": "u"})
    assert await client.next_message() == {
        "type": "response",
        "id": "u",
        "data": {"status": "unsubscribed", "channel": "files"},
    }
    assert server.service.router.subscriber_counts() == {}
    await client.close()


@pytest_twisted.ensureDeferred
async def test_broadcaster_event_reaches_subscriber_with_envelope(server: Any) -> None:
    """
    A file change published through the broadcaster arrives as the event
    envelope with millisecond UTC timestamps, outside and inside.
    """
    client, _ = await connected(server)
    await client.request({"type": "subscribe", "channel": "files", "id": 1})
    report = server.service.broadcaster.file_changed("src/main.ts", "change")
    assert report.delivered == 1
    event = await client.next_message()
    assert event["type"] == "event"
    assert event["channel"] == "files"
    assert ISO_MS.match(event["timestamp"])
    assert event["data"]["file"] == "src/main.ts"
    assert event["data"]["event"] == "change"
    assert ISO_MS.match(event["data"]["timestamp"])
    await client.close()


@pytest_twisted.ensureDeferred
async def test_invoke_and_request_alias_are_answered(server: Any) -> None:
    """
    C{invoke} and the original's C{request} alias both call the procedure
    and answer with its data under the same id.
    """
    client, _ = await connected(server)
    reply = await client.request({"type": "invoke", "id": 7, "channel": "server.info"})
    assert reply["data"]["cwd"] == server.service.config.root
    assert reply["data"]["connections"] == 1
    reply = await client.request({"type": "request", "id": 8, "handler": "server.info"})
    assert reply["data"]["version"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_procedure_errors_are_top_level_with_code(server: Any) -> None:
    """
    An unknown procedure answers C{no_such_procedure}; a procedure that
    raises answers C{internal_error} with only the message; both put the
    error at the top level (where the original client looks) and in data.
    """
    from cluso_router.router.procedures import ProcedureError

    def explode(data: object) -> None:
        raise RuntimeError("disk on fire")

    def refuse(data: object) -> None:
        raise ProcedureError("Branch name is required", "invalid_argument")

    server.service.router.register("test.explode", explode)
    server.service.router.register("test.refuse", refuse)
    client, _ = await connected(server)
    reply = await client.request({"type": "invoke", "id": 1, "channel": "nope.nothing"})
    assert reply["code"] == "no_such_procedure"
    assert reply["error"] == reply["data"]["error"]
    reply = await client.request({"type": "invoke", "id": 2, "channel": "test.explode"})
    assert reply == {
        "type": "response",
        "id": 2,
        "error": "disk on fire",
        "code": "internal_error",
        "data": {"error": "disk on fire"},
    }
    reply = await client.request({"type": "invoke", "id": 3, "channel": "test.refuse"})
    assert (reply["code"], reply["error"]) == ("invalid_argument", "Branch name is required")
    await assert_still_works(client)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_send_publishes_to_other_clients(server: Any) -> None:
    """
    A client's C{send} on a custom channel reaches that channel's
    subscribers; with an id it is acknowledged with the delivery count.
    """
    listener, _ = await connected(server)
    await listener.request({"type": "subscribe", "channel": "chat", "id": 1})
    sender, _ = await connected(server)
    sender.send_json({"type": "send", "channel": "chat", "data": {"text": "hi"}})
    event = await listener.next_message()
    assert (event["channel"], event["data"]) == ("chat", {"text": "hi"})
    reply = await sender.request({"type": "send", "channel": "chat", "data": 2, "id": 9})
    assert reply["data"] == {"status": "sent", "channel": "chat", "delivered": 1}
    assert (await listener.next_message())["data"] == 2
    await listener.close()
    await sender.close()


BAD_INPUTS = [
    pytest.param(b"{not json", "invalid_json", id="invalid-json"),
    pytest.param(b"NaN", "invalid_json", id="nan-is-not-json"),
    pytest.param(b"[1, 2]", "invalid_message", id="array"),
    pytest.param(b'"subscribe"', "invalid_message", id="string"),
    pytest.param(b"null", "invalid_message", id="null"),
    pytest.param(b'{"type": "dance"}', "unknown_type", id="unknown-type"),
    pytest.param(b'{"channel": "files"}', "unknown_type", id="no-type"),
    pytest.param(b'{"type": "subscribe"}', "invalid_channel", id="missing-channel"),
    pytest.param(b'{"type": "subscribe", "channel": ""}', "invalid_channel", id="empty-channel"),
    pytest.param(b'{"type": "subscribe", "channel": 5}', "invalid_channel", id="number-channel"),
    pytest.param(
        b'{"type": "subscribe", "channel": "' + b"x" * 256 + b'"}',
        "invalid_channel",
        id="channel-256-chars",
    ),
    pytest.param(
        b'{"type": "subscribe", "channel": "a\\u0007b"}', "invalid_channel", id="control-char"
    ),
    pytest.param(b'{"type": "unsubscribe", "channel": null}', "invalid_channel", id="unsub-null"),
    pytest.param(
        b'{"type": "send", "channel": "git", "data": 1}', "forbidden_channel", id="send-git"
    ),
    pytest.param(
        b'{"type": "send", "channel": "wamp.session.on_join", "data": 1}',
        "forbidden_channel",
        id="send-wamp-meta",
    ),
    pytest.param(b'{"type": "invoke", "channel": "server.info"}', "missing_id", id="invoke-no-id"),
    pytest.param(b'{"type": "invoke", "id": 1}', "invalid_procedure", id="invoke-no-name"),
]


@pytest.mark.parametrize(("payload", "code"), BAD_INPUTS)
@pytest_twisted.ensureDeferred
async def test_bad_input_gets_error_reply_and_connection_stays_usable(
    server: Any, payload: bytes, code: str
) -> None:
    """
    Every kind of bad input is answered with an error reply carrying a
    snake_case code, and the same connection keeps working afterwards.
    """
    client, _ = await connected(server)
    client.send_raw(payload)
    reply = await client.next_message()
    assert reply["type"] == "response"
    assert reply["code"] == code
    assert reply["error"]
    assert reply["data"] == {"error": reply["error"]}
    await assert_still_works(client)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_error_reply_echoes_id_when_readable(server: Any) -> None:
    """
    When the bad message still carried an id, the error reply echoes it.
    """
    client, _ = await connected(server)
    client.send_json({"type": "subscribe", "id": 41})
    reply = await client.next_message()
    assert (reply["id"], reply["code"]) == (41, "invalid_channel")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_binary_frame_is_refused_and_connection_stays_usable(server: Any) -> None:
    """
    A binary frame gets C{binary_not_supported}; the connection stays open.
    """
    client, _ = await connected(server)
    client.send_raw(b"\x00\x01\x02", binary=True)
    reply = await client.next_message()
    assert reply["code"] == "binary_not_supported"
    await assert_still_works(client)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_closing_removes_session_and_its_subscriptions(server: Any) -> None:
    """
    When a client goes, the router forgets it and every channel it held.
    """
    client, _ = await connected(server)
    for channel in ("files", "git", "custom"):
        await client.request({"type": "subscribe", "channel": channel, "id": channel})
    assert server.service.router.connection_count == 1
    await client.close()
    assert server.service.router.connection_count == 0
    assert server.service.router.subscriber_counts() == {}


@pytest_twisted.ensureDeferred
async def test_http_publish_bridge_and_health(server: Any) -> None:
    """
    C{POST /api/events/<channel>} publishes its JSON body and reports the
    delivery count; invalid JSON is a 400 with a clear error; health shows
    connections and channel subscribers.
    """
    client, _ = await connected(server)
    await client.request({"type": "subscribe", "channel": "build", "id": 1})
    response = await treq.post(server.url + "api/events/build", b'{"step": 3}')
    body = await response.json()
    assert response.code == 200
    assert body["success"] is True
    assert body["data"]["delivered"] == 1
    assert ISO_MS.match(body["timestamp"])
    event = await client.next_message()
    assert (event["channel"], event["data"]) == ("build", {"step": 3})

    response = await treq.post(server.url + "api/events/build", b"{oops")
    body = await response.json()
    assert response.code == 400
    assert body["success"] is False
    assert body["data"] is None
    assert body["error"].startswith("Invalid request:")

    response = await treq.get(server.url + "api/health")
    body = await response.json()
    assert body["data"]["status"] == "ok"
    assert body["data"]["connections"] == 1
    assert body["data"]["channels"] == {"build": 1}
    assert body["data"]["uptimeSeconds"] >= 0
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unknown_api_route_is_json_404(server: Any) -> None:
    """
    Unknown routes under /api answer 404 with the JSON envelope.
    """
    response = await treq.get(server.url + "api/nothing/here")
    body = await response.json()
    assert response.code == 404
    assert body["success"] is False
    assert "nothing" in body["error"]


@pytest_twisted.ensureDeferred
async def test_unexpected_failure_is_answered_and_connection_survives(server: Any) -> None:
    """
    When handling a message fails unexpectedly (here the publisher behind
    C{send} raises), the client gets C{internal_error}, the failure is
    logged, and the connection keeps working.
    """
    from twisted.logger import globalLogPublisher

    factory = server.service.root_resource.children[b"ws"]._factory

    class BrokenPublisher:
        def publish(self, channel: str, data: object) -> None:
            raise RuntimeError("publisher exploded")

    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    original = factory.context
    factory.context = replace(original, publisher=BrokenPublisher())
    try:
        client, _ = await connected(server)
        client.send_json({"type": "send", "channel": "chat", "data": 1})
        reply = await client.next_message()
    finally:
        factory.context = original
        globalLogPublisher.removeObserver(logged.append)
    assert (reply["code"], reply["error"]) == ("internal_error", "publisher exploded")
    assert any("log_failure" in event for event in logged)
    await assert_still_works(client)
    await client.close()
