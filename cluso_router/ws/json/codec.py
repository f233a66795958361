"""
The JSON dialect on the wire: parsing what clients send, building what the
server answers, and encoding events once per broadcast.

Inbound frames become small immutable request objects or a L{ProtocolError}
that carries the snake_case code the client sees; nothing here touches a
socket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from autobahn.websocket.protocol import PreparedMessage
from zope.interface import implementer

from cluso_router import _json
from cluso_router._json import dumps
from cluso_router.interfaces import IFrameEncoder
from cluso_router.router.channels import channel_problem
from cluso_router.router.event import Event
from cluso_router.router.subscriptions import MATCHES, Match

NO_ID: Final = object()


class ProtocolError(Exception):
    """
    A client message the server refuses; the connection stays usable.
    """

    def __init__(self, code: str, message: str, request_id: Any = NO_ID) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Since:
    """
    The last event a client saw on a channel: replay what came after.
    """

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    request_id: Any = NO_ID
    match: Match = "exact"
    since: Since | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    request_id: Any = NO_ID
    match: Match = "exact"


@dataclass(frozen=True, slots=True)
class Invoke:
    procedure: str
    data: Any
    request_id: Any


@dataclass(frozen=True, slots=True)
class Send:
    channel: str
    data: Any
    request_id: Any = NO_ID


Request = Subscribe | Unsubscribe | Invoke | Send


def text_frame(payload: bytes) -> bytes:
    """
    Frame C{payload} as one unmasked WebSocket text message (server to client).
    """
    return PreparedMessage(payload, False, False, True).payloadHybi


def check_channel(channel: Any, request_id: Any = NO_ID) -> str:
    """
    Return C{channel} if it is a usable channel name, else raise
    L{ProtocolError} with code C{invalid_channel}.
    """
    problem = channel_problem(channel)
    if problem is not None:
        raise ProtocolError("invalid_channel", problem, request_id)
    return channel  # type: ignore[no-any-return]


def parse_request(payload: bytes) -> Request:
    """
    Parse one inbound text frame of the JSON dialect.

    @raise ProtocolError: for anything the dialect does not allow, with the
        request's C{id} attached when one could be read.
    """
    try:
        message = _json.loads(payload)
    except _json.JSONError as e:
        raise ProtocolError(
            "invalid_json", f"Failed to parse message: {e}", _id_of(e.parsed)
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_message", "message must be a JSON object")
    request_id = message.get("id", NO_ID)
    kind = message.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type: {kind!r}" if kind is not None else "message has no 'type'",
            request_id,
        )
    return parser(message, request_id)


def _id_of(parsed: Any) -> Any:
    """
    The C{id} of a message refused as not strict JSON, when that id itself
    is strict JSON, so the client learns which request failed.
    """
    if not isinstance(parsed, dict) or "id" not in parsed:
        return NO_ID
    try:
        _json.check(parsed["id"])
    except _json.JSONError:
        return NO_ID
    return parsed["id"]


def _match(message: dict[str, Any], request_id: Any) -> Match:
    match = message.get("match", "exact")
    if match not in MATCHES:
        raise ProtocolError(
            "invalid_match", "match must be one of exact, prefix, wildcard", request_id
        )
    return match  # type: ignore[no-any-return]


def _since(message: dict[str, Any], match: Match, request_id: Any) -> Since | None:
    since = message.get("since")
    if since is None:
        return None
    if match != "exact":
        raise ProtocolError(
            "invalid_since", "recovery with 'since' needs an exact subscription", request_id
        )
    seq = since.get("seq") if isinstance(since, dict) else None
    epoch = since.get("epoch") if isinstance(since, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(epoch, str):
        raise ProtocolError(
            "invalid_since",
            'since must be {"seq": <non-negative integer>, "epoch": <string>}',
            request_id,
        )
    return Since(seq, epoch)


def _subscribe(message: dict[str, Any], request_id: Any) -> Request:
    channel = check_channel(message.get("channel"), request_id)
    match = _match(message, request_id)
    return Subscribe(channel, request_id, match, _since(message, match, request_id))


def _unsubscribe(message: dict[str, Any], request_id: Any) -> Request:
    channel = check_channel(message.get("channel"), request_id)
    return Unsubscribe(channel, request_id, _match(message, request_id))


def _procedure_call(name_key: str) -> Callable[[dict[str, Any], Any], Request]:
    def parse(message: dict[str, Any], request_id: Any) -> Request:
        if request_id is NO_ID or request_id is None:
            raise ProtocolError("missing_id", "a procedure call needs an 'id'")
        procedure = message.get(name_key)
        if not isinstance(procedure, str) or not procedure:
            raise ProtocolError(
                "invalid_procedure",
                f"'{name_key}' must name a procedure",
                request_id,
            )
        return Invoke(procedure, message.get("data"), request_id)

    return parse


def _send(message: dict[str, Any], request_id: Any) -> Request:
    return Send(
        check_channel(message.get("channel"), request_id),
        message.get("data"),
        request_id,
    )


_PARSERS = {
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "invoke": _procedure_call("channel"),
    "request": _procedure_call("handler"),
    "send": _send,
}


def _response(request_id: Any, **fields: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": "response"}
    if request_id is not NO_ID:
        reply["id"] = request_id
    reply.update(fields)
    return reply


def greeting(connection_id: str, cwd: str) -> dict[str, Any]:
    """
    The first frame on every connection.
    """
    return _response(NO_ID, data={"status": "connected", "connectionId": connection_id, "cwd": cwd})


def ack(status: str, channel: str, request_id: Any = NO_ID, **details: Any) -> dict[str, Any]:
    """
    The answer to subscribe and unsubscribe; C{details} adds fields such as
    the match policy or the channel's history position.
    """
    return _response(request_id, data={"status": status, "channel": channel, **details})


def result(request_id: Any, data: Any) -> dict[str, Any]:
    """
    A successful procedure call's answer.
    """
    return _response(request_id, data=data)


def error(code: str, message: str, request_id: Any = NO_ID) -> dict[str, Any]:
    """
    An error answer; C{data.error} repeats the message for clients written
    against the original server, which only looked there.
    """
    return _response(request_id, error=message, code=code, data={"error": message})


def event_envelope(event: Event) -> dict[str, Any]:
    envelope = {
        "type": "event",
        "channel": event.channel,
        "data": event.data,
        "timestamp": event.timestamp,
    }
    if event.seq is not None:
        envelope["seq"] = event.seq
    return envelope


@implementer(IFrameEncoder)
class JsonEventEncoder:
    """
    Encodes events as the JSON dialect's C{event} envelope in a text frame,
    splicing in the data's JSON when the publisher already made it.
    """

    dialect = "json"
    per_subscription = False

    def encode_event(self, event: Event, subscription: object = None) -> bytes:
        data = event.encoded if event.encoded is not None else dumps(event.data)
        seq = b"" if event.seq is None else b',"seq":%d' % event.seq
        return text_frame(
            b'{"type":"event","channel":'
            + dumps(event.channel)
            + b',"data":'
            + data
            + b',"timestamp":'
            + dumps(event.timestamp)
            + seq
            + b"}"
        )


JSON_ENCODER: Final = JsonEventEncoder()
