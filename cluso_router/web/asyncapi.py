"""
C{GET /api/asyncapi.json}: the AsyncAPI 3.0 contract of the WebSocket
endpoint, made when asked from what runs now: one channel per claimed
channel (built-in and third-party sources alike), with the JSON Schema,
description and examples of its events from the claim; the JSON dialect's
requests (subscribe, unsubscribe, invoke, request, send) and answers; and
the WebSocket binding of the one connection everything travels on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router._json import dumps
from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router._version import __version__
from cluso_router.router.channels import ChannelRegistry, ChannelSpec
from cluso_router.router.subscriptions import MATCHES
from cluso_router.web.resources import envelope, write_envelope

VERSION: Final = "3.0.0"
EXAMPLE_TIMESTAMP: Final = "2024-12-09T15:30:45.123Z"
#: Channels of the document that are not claimed channels.
CONTROL: Final = "control"
CLIENT: Final = "clientChannel"

WS_BINDING: Final = {
    "ws": {
        "method": "GET",
        "query": {
            "type": "object",
            "properties": {
                "token": {"type": "string", "description": "The access token, if no header"}
            },
        },
        "bindingVersion": "0.1.0",
    }
}

_ID: Final = {
    "type": ["string", "number"],
    "description": "Echoed unchanged in the answer",
}
_STRING: Final = {"type": "string"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _request(kind: str, required: list[str], summary: str, **properties: Any) -> dict[str, Any]:
    return {
        "name": kind,
        "title": kind,
        "summary": summary,
        "payload": _object(["type", *required], type={"const": kind}, **properties),
    }


CONTROL_MESSAGES: Final[Mapping[str, Any]] = {
    "subscribe": _request(
        "subscribe",
        ["channel"],
        "Subscribe to a channel (or, with match, to a prefix or wildcard pattern); "
        "since replays what was missed",
        channel=_STRING,
        id=_ID,
        match={"type": "string", "enum": list(MATCHES)},
        since=_object(["seq", "epoch"], seq={"type": "integer", "minimum": 0}, epoch=_STRING),
    ),
    "unsubscribe": _request(
        "unsubscribe",
        ["channel"],
        "Leave a channel or pattern",
        channel=_STRING,
        id=_ID,
        match={"type": "string", "enum": list(MATCHES)},
    ),
    "invoke": _request(
        "invoke",
        ["id", "channel"],
        "Call a procedure (channel names it); data is its argument",
        id=_ID,
        channel=_STRING,
        data={},
    ),
    "request": _request(
        "request",
        ["id", "handler"],
        "The original server's name for invoke",
        id=_ID,
        handler=_STRING,
        data={},
    ),
    "send": _request(
        "send",
        ["channel"],
        "Publish data on a channel no server part claimed",
        channel=_STRING,
        data={},
        id=_ID,
    ),
    "response": {
        "name": "response",
        "title": "response",
        "summary": "The greeting, an acknowledgment or a procedure's result",
        "payload": _object(["type", "data"], type={"const": "response"}, id=_ID, data={}),
        "examples": [
            {
                "name": "greeting",
                "payload": {
                    "type": "response",
                    "data": {
                        "status": "connected",
                        "connectionId": "conn-1733747230000-k3j9x2ab",
                        "cwd": "/abs/project",
                    },
                },
            },
            {
                "name": "subscribed",
                "payload": {
                    "type": "response",
                    "id": 1,
                    "data": {
                        "status": "subscribed",
                        "channel": "files",
                        "seq": 41,
                        "epoch": "3f9a0c1d2e4b",
                    },
                },
            },
        ],
    },
    "error": {
        "name": "error",
        "title": "error",
        "summary": "A refused request; the connection stays open",
        "payload": _object(
            ["type", "error", "code"],
            type={"const": "response"},
            id=_ID,
            error=_STRING,
            code={"type": "string", "description": "snake_case, such as invalid_channel"},
            data=_object(["error"], error=_STRING),
        ),
    },
}

_REPLIES: Final = {
    "subscribe": ("response", "error"),
    "unsubscribe": ("response", "error"),
    "invoke": ("response", "error"),
    "request": ("response", "error"),
    "send": ("response", "error"),
}


def event_payload(channel: str | None, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    The schema of the JSON dialect's C{event} envelope around C{data}.
    """
    return _object(
        ["type", "channel", "data", "timestamp"],
        type={"const": "event"},
        channel={"const": channel} if channel is not None else _STRING,
        data=dict(data) if data is not None else {},
        timestamp=dict(TIMESTAMP_SCHEMA),
        seq={"type": "integer", "minimum": 1, "description": "Rises by one per channel"},
    )


def example_event(channel: str, data: Any, seq: int) -> dict[str, Any]:
    return {
        "type": "event",
        "channel": channel,
        "data": data,
        "timestamp": EXAMPLE_TIMESTAMP,
        "seq": seq,
    }


def _keys(specs: list[ChannelSpec]) -> dict[str, ChannelSpec]:
    """
    A document key for each claimed channel: its name where that is a plain
    word, else a word made from it, never one of the document's own.
    """
    keys: dict[str, ChannelSpec] = {}
    for spec in specs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.channel).strip("_") or "channel"
        key, n = base, 1
        while key in keys or key in (CONTROL, CLIENT):
            n += 1
            key = f"{base}-{n}"
        keys[key] = spec
    return keys


def _claimed_channel(spec: ChannelSpec, server: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": "event",
        "title": f"{spec.channel} event",
        "summary": spec.description or f"An event on {spec.channel}",
        "payload": event_payload(spec.channel, spec.schema),
    }
    if spec.examples:
        message["examples"] = [
            {"name": f"example{i}", "payload": example_event(spec.channel, example, i)}
            for i, example in enumerate(spec.examples, 1)
        ]
    channel: dict[str, Any] = {
        # A name with braces would read as a parameter: such a channel
        # keeps its name in the title only.
        "address": None if "{" in spec.channel or "}" in spec.channel else spec.channel,
        "title": spec.channel,
        "description": spec.description or f"Events the server publishes on {spec.channel}",
        "servers": [server],
        "messages": {"event": message},
        "bindings": WS_BINDING,
    }
    return channel


def asyncapi_document(
    claims: ChannelRegistry, host: str, secure: bool, token: bool
) -> dict[str, Any]:
    """
    The document for a server reached at C{host} (with C{wss} when
    C{secure}), describing its token schemes when C{token}.
    """
    server = {"$ref": "#/servers/router"}
    channels: dict[str, Any] = {
        CONTROL: {
            "address": None,
            "title": "requests and answers",
            "description": "What a client sends on its WebSocket and the answers it gets; "
            "requests name channels and procedures in their fields.",
            "servers": [server],
            "messages": dict(CONTROL_MESSAGES),
            "bindings": WS_BINDING,
        },
        CLIENT: {
            "address": "{channel}",
            "title": "client channels",
            "description": "Any channel no server part claimed: clients publish on it "
            "with send (or POST /api/events/<channel>) and subscribe to it.",
            "parameters": {"channel": {"description": "The channel's name"}},
            "servers": [server],
            "messages": {
                "event": {
                    "name": "event",
                    "title": "event",
                    "summary": "Whatever its publisher sent",
                    "payload": event_payload(None, None),
                }
            },
            "bindings": WS_BINDING,
        },
    }
    operations: dict[str, Any] = {}
    for kind, replies in _REPLIES.items():
        operations[kind] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{CONTROL}"},
            "summary": CONTROL_MESSAGES[kind]["summary"],
            "messages": [{"$ref": f"#/channels/{CONTROL}/messages/{kind}"}],
            "reply": {
                "channel": {"$ref": f"#/channels/{CONTROL}"},
                "messages": [{"$ref": f"#/channels/{CONTROL}/messages/{r}"} for r in replies],
            },
        }
    operations["receiveClientEvent"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{CLIENT}"},
        "summary": "An event on a client channel the client subscribed to",
        "messages": [{"$ref": f"#/channels/{CLIENT}/messages/event"}],
    }
    for key, spec in _keys(claims.specs()).items():
        channels[key] = _claimed_channel(spec, server)
        operations[f"receive.{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"An event on {spec.channel}, to a client subscribed to it",
            "messages": [{"$ref": f"#/channels/{key}/messages/event"}],
        }
    router: dict[str, Any] = {
        "host": host,
        "pathname": "/ws",
        "protocol": "wss" if secure else "ws",
        "description": "The router's WebSocket endpoint (JSON dialect; WAMP with the "
        "wamp.2.json subprotocol)",
    }
    document: dict[str, Any] = {
        "asyncapi": VERSION,
        "id": "urn:cluso-router:events",
        "info": {
            "title": "cluso-router events",
            "version": __version__,
            "description": "The channels this server publishes on now and the JSON "
            "dialect of its WebSocket. Every event arrives in the envelope "
            "{type: event, channel, data, timestamp, seq}; data follows the channel's "
            "schema. See docs/protocol.md.",
        },
        "defaultContentType": "application/json",
        "servers": {"router": router},
        "channels": channels,
        "operations": operations,
    }
    if token:
        router["security"] = [
            {"$ref": f"#/components/securitySchemes/{name}"} for name in SECURITY_SCHEMES
        ]
        document["components"] = {"securitySchemes": dict(SECURITY_SCHEMES)}
    return document


SECURITY_SCHEMES: Final[Mapping[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer TOKEN on the handshake",
    },
    "apiKey": {"type": "httpApiKey", "name": "X-API-Key", "in": "header"},
    "queryToken": {"type": "httpApiKey", "name": "token", "in": "query"},
}


class AsyncApiResource(Resource):
    """
    C{GET /api/asyncapi.json}: the document itself, not wrapped in the
    envelope, so AsyncAPI tools read it as it is.
    """

    isLeaf = True

    def __init__(self, claims: ChannelRegistry, token: bool) -> None:
        super().__init__()
        self._claims = claims
        self._token = token

    def render(self, request: Request) -> bytes:
        if request.method != b"GET":
            request.setHeader(b"allow", b"GET")
            return write_envelope(request, 405, envelope(error="Method not allowed; use GET"))
        host = request.getHeader(b"host") or b"localhost"
        document = asyncapi_document(
            self._claims, host.decode("latin-1"), request.isSecure(), self._token
        )
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return dumps(document)
