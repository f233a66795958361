"""
The AsyncAPI document, made from the channels claimed now: one channel per
claim with its schema and examples, the JSON dialect's requests with their
replies, the WebSocket binding and the token's schemes.
"""

from __future__ import annotations

import jsonschema

from cluso_router.router.channels import ChannelRegistry, ChannelSpec
from cluso_router.web.asyncapi import asyncapi_document

TICK = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}


def registry(*specs: ChannelSpec) -> ChannelRegistry:
    claims = ChannelRegistry()
    for spec in specs:
        claims.claim(spec, "test")
    return claims


def test_each_claimed_channel_is_described_with_its_events() -> None:
    """
    A claimed channel's description, payload schema (inside the event
    envelope) and examples are in the document, with an operation to
    receive it; the examples validate against the payload schema.
    """
    claims = registry(ChannelSpec("ticker", "Ticks", schema=TICK, examples=({"n": 1}, {"n": 2})))
    document = asyncapi_document(claims, "127.0.0.1:3000", secure=False, token=False)
    channel = document["channels"]["ticker"]
    assert (channel["address"], channel["description"]) == ("ticker", "Ticks")
    message = channel["messages"]["event"]
    assert message["payload"]["properties"]["data"] == TICK
    validator = jsonschema.Draft7Validator(message["payload"])
    payloads = [example["payload"] for example in message["examples"]]
    for payload in payloads:
        validator.validate(payload)
    assert [p["data"] for p in payloads] == [{"n": 1}, {"n": 2}]
    assert not validator.is_valid({**payloads[0], "data": {"n": "one"}})
    assert not validator.is_valid({**payloads[0], "channel": "other"})
    assert document["operations"]["receive.ticker"]["messages"] == [
        {"$ref": "#/channels/ticker/messages/event"}
    ]
    assert document["servers"]["router"] == {
        "host": "127.0.0.1:3000",
        "pathname": "/ws",
        "protocol": "ws",
        "description": document["servers"]["router"]["description"],
    }
    assert "components" not in document


def test_requests_have_replies_and_the_token_has_schemes() -> None:
    """
    Each request of the JSON dialect is a send operation whose reply is the
    response or the error; with a token the server names its schemes.
    """
    document = asyncapi_document(registry(), "localhost", secure=True, token=True)
    for kind in ("subscribe", "unsubscribe", "invoke", "request", "send"):
        operation = document["operations"][kind]
        assert operation["action"] == "send"
        assert operation["reply"]["messages"] == [
            {"$ref": "#/channels/control/messages/response"},
            {"$ref": "#/channels/control/messages/error"},
        ]
    assert document["servers"]["router"]["protocol"] == "wss"
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer TOKEN on the handshake",
    }
    assert len(document["servers"]["router"]["security"]) == len(schemes)


def test_awkward_channel_names_get_keys_of_their_own() -> None:
    """
    A name that is not a plain word gets a key made from it, one taken by
    the document's own channels another, and one with braces (which would
    read as a parameter) no address; every channel keeps its name as title.
    """
    claims = registry(
        ChannelSpec("build/done"), ChannelSpec("control"), ChannelSpec("a{b}"), ChannelSpec("a_b")
    )
    channels = asyncapi_document(claims, "h", secure=False, token=False)["channels"]
    titles = {key: channel["title"] for key, channel in channels.items()}
    assert titles["build_done"] == "build/done"
    assert titles["control-2"] == "control"
    assert titles["a_b"] == "a_b"
    assert titles["a_b-2"] == "a{b}"
    assert channels["a_b-2"]["address"] is None
    assert channels["build_done"]["address"] == "build/done"
