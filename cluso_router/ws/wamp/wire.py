"""
WAMP messages out: a raw message serialized by the session's serializer
and framed by its transport (a WebSocket text or binary message, or a
RawSocket frame), and events encoded once per subscription and wire.

A L{Wire} is one (serializer, transport) pair; connections that share one
share its event encoder, so the router serializes and frames one event once
per wire in use, whatever the number of subscribers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from autobahn.websocket.protocol import PreparedMessage
from zope.interface import implementer

from cluso_router._json import dumps
from cluso_router.interfaces import IFrameEncoder
from cluso_router.router.event import Event
from cluso_router.router.payload import arguments_of, spelled_out
from cluso_router.router.subscriptions import Subscription
from cluso_router.ws.wamp.serializers import WampSerializer

WEBSOCKET: Final = "websocket"
RAWSOCKET: Final = "rawsocket"
EVENT: Final = 36
#: The largest RawSocket frame (24 length bits).
RAWSOCKET_MAX_LENGTH: Final = 2**24 - 1


def websocket_frame(payload: bytes, binary: bool) -> bytes:
    """
    C{payload} as one unmasked WebSocket message (server to client).
    """
    return PreparedMessage(payload, binary, False, True).payloadHybi


def rawsocket_frame(payload: bytes, binary: bool = True) -> bytes:
    """
    C{payload} as one RawSocket WAMP message frame (type 0).

    @raise ValueError: when it is longer than a frame can say.
    """
    if len(payload) > RAWSOCKET_MAX_LENGTH:
        raise ValueError(f"a RawSocket frame holds at most {RAWSOCKET_MAX_LENGTH} bytes")
    return len(payload).to_bytes(4, "big") + payload


_FRAMINGS: Final[dict[str, Callable[[bytes, bool], bytes]]] = {
    WEBSOCKET: websocket_frame,
    RAWSOCKET: rawsocket_frame,
}


class Wire:
    """
    How the WAMP messages of some connections leave: one serializer, one
    transport's framing, and the event encoder they share.
    """

    def __init__(self, serializer: WampSerializer, transport: str) -> None:
        self.serializer = serializer
        self.transport = transport
        self._framing = _FRAMINGS[transport]
        self.encoder = WampEventEncoder(self)

    def frame(self, raw: list[Any]) -> bytes:
        """
        One raw message, serialized and framed.

        @raise ValueError: (or C{TypeError}) when a value in it has no form
            in this serializer.
        """
        return self._framing(self.serializer.dumps(raw), self.serializer.binary)

    def framed(self, payload: bytes) -> bytes:
        """
        An already serialized message, framed.
        """
        return self._framing(payload, self.serializer.binary)

    def __repr__(self) -> str:
        return f"<Wire {self.serializer.id} over {self.transport}>"


_WIRES: dict[tuple[WampSerializer, str], Wire] = {}


def wire(serializer: WampSerializer, transport: str) -> Wire:
    """
    The one L{Wire} of C{serializer} over C{transport}.
    """
    key = (serializer, transport)
    found = _WIRES.get(key)
    if found is None:
        found = _WIRES[key] = Wire(serializer, transport)
    return found


def event_details(event: Event, subscription: Subscription) -> dict[str, Any]:
    """
    The details of C{event}'s EVENT for C{subscription}: the concrete topic
    for a pattern subscription, and what the publisher's side added
    (publisher identification, payload passthru options).
    """
    details: dict[str, Any] = {}
    if subscription.match != "exact":
        details["topic"] = event.channel
    extras = event.extras
    if extras is not None and extras.details:
        details.update(extras.details)
    return details


def event_message(event: Event, subscription: Subscription) -> list[Any]:
    """
    The raw EVENT of C{event} for C{subscription}: the arguments a WAMP
    publisher gave (or its transparent payload), else those the event's
    data stands for (L{arguments_of}).
    """
    head = [EVENT, subscription.id, event.publication, event_details(event, subscription)]
    extras = event.extras
    if extras is not None and extras.payload is not None:
        return [*head, extras.payload]
    if extras is not None and extras.args is not None:
        args, kwargs = extras.args, extras.kwargs
    else:
        args, kwargs = arguments_of(event.data)
    return [*head, args, kwargs] if kwargs else [*head, args]


@implementer(IFrameEncoder)
class WampEventEncoder:
    """
    Encodes an event as a WAMP EVENT for one subscription on one wire.

    The router encodes each event once per subscription and wire, and
    shares the frame among that subscription's sessions on the wire. All
    frames of one event carry its publication id, which lets a client that
    holds several matching subscriptions tell it is one event. On a JSON
    wire, the JSON the event's data already has is spliced in.
    """

    dialect = "wamp"
    per_subscription = True

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        serializer = wire.serializer
        self._json_suffix: bytes | None = None
        if serializer.id.startswith("json"):
            self._json_suffix = serializer.dumps(0)[1:]

    def encode_event(self, event: Event, subscription: Subscription) -> bytes:
        suffix = self._json_suffix
        if (
            suffix is not None
            and event.extras is None
            and event.encoded is not None
            and spelled_out(event.data) is None
        ):
            details = (
                b"{}"
                if subscription.match == "exact"
                else b'{"topic":' + dumps(event.channel) + b"}"
            )
            return self._wire.framed(
                b"[36,%d,%d,%b,[%b]]%b"
                % (subscription.id, event.publication, details, event.encoded, suffix)
            )
        return self._wire.frame(event_message(event, subscription))
