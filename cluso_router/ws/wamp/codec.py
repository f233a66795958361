"""
WAMP messages in: a received frame decoded by the session's serializer and
checked by Autobahn's own message classes, and the mapping between the
router's error codes and WAMP error URIs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

from autobahn.wamp import message

from cluso_router.ws.wamp.serializers import WampSerializer

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


def _message_types() -> dict[int, Any]:
    """
    Autobahn's message classes by their message type.
    """
    types: dict[int, Any] = {}
    for klass in vars(message).values():
        if isinstance(klass, type) and issubclass(klass, message.Message):
            message_type = getattr(klass, "MESSAGE_TYPE", None)
            if isinstance(message_type, int):
                types[message_type] = klass
    return types


_MESSAGE_TYPES: Final = _message_types()
_URI_CHARACTERS: Final = re.compile(r"[^a-z0-9_]+")

#: Router error codes with a WAMP-defined error URI; any other code C{x}
#: becomes C{cluso.error.x}.
_WAMP_ERRORS: Final = {
    "no_such_procedure": "wamp.error.no_such_procedure",
    "invalid_argument": "wamp.error.invalid_argument",
    "canceled": "wamp.error.canceled",
    "not_authorized": "wamp.error.not_authorized",
}


class ProtocolViolation(Exception):
    """
    A message a session may not send in its state or with what it
    announced; the session is aborted with C{wamp.error.protocol_violation}.
    """


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


def decode(serializer: WampSerializer, payload: bytes) -> list[Any]:
    """
    The raw messages in one received frame.

    @raise InvalidMessage: when C{serializer} cannot read it.
    """
    try:
        return serializer.loads(payload)
    except Exception as e:
        raise InvalidMessage(f"not {serializer.id}: {e}") from None


def parse(raw: Any) -> tuple[Any, dict[str, Any]]:
    """
    One raw WAMP message as an Autobahn message object, and its options
    (or details) as sent, for the ones Autobahn does not keep
    (C{disclose_me}, C{ppt_*}, C{forward_timeout}).

    @raise InvalidMessage: for anything that is not a valid message.
    """
    if not isinstance(raw, list) or not raw:
        raise InvalidMessage("a WAMP message is a non-empty array")
    message_type = raw[0]
    if not isinstance(message_type, int) or isinstance(message_type, bool):
        raise InvalidMessage("a WAMP message starts with its integer type")
    klass = _MESSAGE_TYPES.get(message_type)
    if klass is None:
        raise InvalidMessage(f"unknown WAMP message type {message_type}")
    try:
        parsed = klass.parse(raw)
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
    options = next((item for item in raw[1:4] if isinstance(item, dict)), {})
    return parsed, options


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


#: Autobahn's names for the payload transparency options.
_ENC_OPTIONS: Final = ("enc_algo", "enc_key", "enc_serializer")


def passthru_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """
    The payload passthru options of a message's options, to forward as they
    are: the specification's C{ppt_*} (when C{ppt_scheme} names a scheme)
    or Autobahn's C{enc_*}.
    """
    scheme = options.get("ppt_scheme")
    if isinstance(scheme, str) and scheme:
        return {key: value for key, value in options.items() if key.startswith("ppt_")}
    return {key: options[key] for key in _ENC_OPTIONS if options.get(key) is not None}
