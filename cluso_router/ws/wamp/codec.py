"""
WAMP messages on the wire: frames in and out with Autobahn's own message
classes and JSON serializer, and events encoded once per subscription.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Final

import txaio
from autobahn.wamp import message
from autobahn.wamp.serializer import JsonSerializer
from zope.interface import implementer

from cluso_router._json import JSONError, loads
from cluso_router.interfaces import IFrameEncoder
from cluso_router.router.event import Event
from cluso_router.router.payload import arguments_of
from cluso_router.router.subscriptions import Subscription
from cluso_router.ws.json.codec import text_frame

SUBPROTOCOL: Final = "wamp.2.json"
#: WAMP ids are integers in [1, 2**53], exactly representable in JavaScript.
MAX_ID: Final = 2**53

#: Messages a client sends to ask for something; the router answers each
#: with a reply or an ERROR naming its request id.
REQUEST_TYPES: Final = frozenset(
    {
        message.Subscribe.MESSAGE_TYPE,
        message.Unsubscribe.MESSAGE_TYPE,
        message.Publish.MESSAGE_TYPE,
        message.Register.MESSAGE_TYPE,
        message.Unregister.MESSAGE_TYPE,
        message.Call.MESSAGE_TYPE,
    }
)

txaio.use_twisted()
_SERIALIZER: Final = JsonSerializer()
_MESSAGE_TYPES: Final[dict[int, Any]] = JsonSerializer.MESSAGE_TYPE_MAP
_URI_CHARACTERS: Final = re.compile(r"[^a-z0-9_]+")

#: Router error codes with a WAMP-defined error URI; any other code C{x}
#: becomes C{cluso.error.x}.
_WAMP_ERRORS: Final = {
    "no_such_procedure": "wamp.error.no_such_procedure",
    "invalid_argument": "wamp.error.invalid_argument",
    "canceled": "wamp.error.canceled",
    "not_authorized": "wamp.error.not_authorized",
}


def random_id() -> int:
    """
    A random WAMP id (session ids, publication ids).
    """
    return secrets.randbelow(MAX_ID) + 1


class InvalidMessage(Exception):
    """
    A frame that is not a valid WAMP message.

    @ivar request: the message's type and request id when the frame was a
        readable request (so the router can answer it with an ERROR),
        else C{None} (so it aborts the session).
    @ivar uri_error: whether a URI in it was the problem.
    @ivar quiet: whether the request asked for no answer (a PUBLISH without
        C{acknowledge}), so it is dropped without one.
    """

    def __init__(
        self,
        reason: str,
        request: tuple[int, int] | None = None,
        uri_error: bool = False,
        quiet: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.uri_error = uri_error
        self.quiet = quiet


def parse(payload: bytes) -> Any:
    """
    The one WAMP message in C{payload}, as an Autobahn message object.

    The JSON is decoded as plain JSON (no NaN, and none of the binary-string
    conventions of Autobahn's decoder, so values cross to the JSON dialect
    unchanged); Autobahn's message classes then check and parse it.

    @raise InvalidMessage: for anything else.
    """
    try:
        raw = loads(payload)
    except JSONError as e:
        raise InvalidMessage(f"not JSON: {e}") from None
    if not isinstance(raw, list) or not raw:
        raise InvalidMessage("a WAMP message is a non-empty JSON array")
    message_type = raw[0]
    if not isinstance(message_type, int) or isinstance(message_type, bool):
        raise InvalidMessage("a WAMP message starts with its integer type")
    klass = _MESSAGE_TYPES.get(message_type)
    if klass is None:
        raise InvalidMessage(f"unknown WAMP message type {message_type}")
    try:
        return klass.parse(raw)
    except Exception as e:
        request_id: Any = raw[1] if len(raw) > 1 else None
        readable = (
            message_type in REQUEST_TYPES
            and isinstance(request_id, int)
            and not isinstance(request_id, bool)
            and 0 <= request_id <= MAX_ID
        )
        options = raw[2] if len(raw) > 2 else None
        raise InvalidMessage(
            str(e),
            (message_type, request_id) if readable else None,
            uri_error=type(e).__name__ == "InvalidUriError",
            quiet=readable
            and message_type == message.Publish.MESSAGE_TYPE
            and not (isinstance(options, dict) and options.get("acknowledge") is True),
        ) from None


def encode(msg: Any) -> bytes:
    """
    C{msg} serialized and framed as one WebSocket text message.

    @raise TypeError: or C{ValueError} when its payload is not JSON.
    """
    payload, _ = _SERIALIZER.serialize(msg)
    return text_frame(payload)


def error_uri(code: str) -> str:
    """
    The WAMP error URI for a router error code.
    """
    return _WAMP_ERRORS.get(code) or f"cluso.error.{code}"


def error_code(uri: str) -> str:
    """
    The snake_case router error code for a WAMP error URI (the inverse of
    L{error_uri} for the URIs it makes).
    """
    for prefix in ("wamp.error.", "cluso.error."):
        if uri.startswith(prefix):
            uri = uri[len(prefix) :]
            break
    return _URI_CHARACTERS.sub("_", uri.lower()).strip("_") or "error"


@implementer(IFrameEncoder)
class WampEventEncoder:
    """
    Encodes an event as a WAMP EVENT for one subscription.

    The router encodes each event once per subscription and shares the
    frame among that subscription's sessions. All frames of one event carry
    its publication id, which lets a client that holds several matching
    subscriptions tell it is one event. A WAMP publisher's arguments go out
    as it gave them; any other event's data as
    L{cluso_router.router.payload.arguments_of} makes it.
    """

    per_subscription = True

    def encode_event(self, event: Event, subscription: Subscription) -> bytes:
        extras = event.extras
        if extras is not None and extras.args is not None:
            args, kwargs = extras.args, extras.kwargs
        else:
            args, kwargs = arguments_of(event.data)
        return encode(
            message.Event(
                subscription.id,
                event.publication,
                args=args,
                kwargs=kwargs,
                topic=event.channel if subscription.match != "exact" else None,
            )
        )


WAMP_ENCODER: Final = WampEventEncoder()
