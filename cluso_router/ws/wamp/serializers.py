"""
The WAMP serializers this router speaks, built on Autobahn's own object
serializers: C{json}, C{msgpack}, C{cbor} and, when its package imports,
C{ubjson}, each also C{.batched} on WebSocket.

JSON goes through the server's one JSON policy (L{cluso_router._json}:
strict, with WAMP's binary strings) rather than Autobahn's decoder, which
scans strings in pure Python; the binary serializers are Autobahn's.

Autobahn imports its optional backends (C{msgpack}, C{cbor2}, C{bjdata})
when C{autobahn.wamp.serializer} is first imported and skips one that
raises C{ImportError}; a backend that raises anything else takes the whole
module down (C{bjdata} built against another numpy does). So each backend
is tried here first: one that fails to import is hidden from Autobahn and
its serializer disabled, with one log line, and the others keep working.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import txaio
from twisted.logger import Logger

from cluso_router import _json

_log = Logger()

#: Autobahn's optional serializer backends, by the serializer they serve.
OPTIONAL_BACKENDS: Final = {"msgpack": "msgpack", "cbor": "cbor2", "ubjson": "bjdata"}
#: WebSocket subprotocols are this prefix and a serializer id.
SUBPROTOCOL_PREFIX: Final = "wamp.2."
#: The JSON-batched separator the specification names (ASCII record
#: separator): each message is followed by it.
JSON_BATCH_SEPARATOR: Final = b"\x1e"
#: The one Autobahn-Python (and so Crossbar) uses instead: its code spells
#: the specification's "\\30" as a Python octal escape, which is 0x18.
AUTOBAHN_JSON_BATCH_SEPARATOR: Final = b"\x18"


def _import_backends() -> dict[str, str]:
    """
    Import each optional backend; hide the ones that fail from Autobahn.

    @return: why each failed one failed, by serializer id (a missing
        package is not listed: Autobahn skips it by itself).
    """
    failed: dict[str, str] = {}
    for serializer, module in OPTIONAL_BACKENDS.items():
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        except Exception as e:
            sys.modules[module] = None  # type: ignore[assignment]
            failed[serializer] = f"{type(e).__name__}: {e}"
    return failed


txaio.use_twisted()
BROKEN_BACKENDS: Final = _import_backends()
for _serializer, _reason in BROKEN_BACKENDS.items():
    _log.warn(
        "WAMP serializer {serializer} is disabled: {module} failed to import ({reason})",
        serializer=_serializer,
        module=OPTIONAL_BACKENDS[_serializer],
        reason=_reason,
    )

from autobahn.wamp import serializer as _autobahn  # noqa: E402


@dataclass(frozen=True)
class WampSerializer:
    """
    One serializer: how one raw WAMP message (a list) becomes bytes, and
    how a received frame becomes raw messages.

    @ivar id: the serializer id, as in C{wamp.2.<id>} (C{msgpack.batched}).
    @ivar binary: whether it needs binary WebSocket frames.
    @ivar rawsocket_id: its number in a RawSocket handshake (0: not on
        RawSocket, as the batched ones).
    @ivar dumps: one raw message to bytes (with its batch framing).
    @ivar loads: a received message to raw messages (several when batched).
    """

    id: str
    binary: bool
    rawsocket_id: int
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], list[Any]]

    @property
    def subprotocol(self) -> str:
        return SUBPROTOCOL_PREFIX + self.id

    @property
    def batched(self) -> bool:
        return self.id.endswith(".batched")


def _json_dumps(raw: Any) -> bytes:
    return _json.dumps(raw, binary=True)


def _json_loads(payload: bytes) -> list[Any]:
    return [_json.loads(payload, binary=True)]


def _json_batched(separator: bytes) -> tuple[Callable[[Any], bytes], Callable[[bytes], list[Any]]]:
    def dumps(raw: Any) -> bytes:
        return _json.dumps(raw, binary=True) + separator

    def loads(payload: bytes) -> list[Any]:
        # JSON text never holds a raw control character, so either separator
        # is unambiguous; a peer's messages are read whichever it uses.
        ending = payload[-1:]
        if ending not in (JSON_BATCH_SEPARATOR, AUTOBAHN_JSON_BATCH_SEPARATOR):
            raise ValueError("a json.batched message ends with a \\x1e separator")
        return [_json.loads(part, binary=True) for part in payload.split(ending)[:-1]]

    return dumps, loads


def _available() -> dict[str, WampSerializer]:
    serializers = {
        "json": WampSerializer("json", False, 1, _json_dumps, _json_loads),
        "json.batched": WampSerializer(
            "json.batched", False, 0, *_json_batched(JSON_BATCH_SEPARATOR)
        ),
    }
    for name, rawsocket_id in (("msgpack", 2), ("cbor", 3), ("ubjson", 4)):
        klass = _autobahn.SERID_TO_OBJSER.get(name)
        if klass is None:
            continue
        for batched in (False, True):
            objects = klass(batched=batched)
            ser_id = f"{name}.batched" if batched else name
            serializers[ser_id] = WampSerializer(
                ser_id,
                True,
                0 if batched else rawsocket_id,
                objects.serialize,
                objects.unserialize,
            )
    return serializers


#: Every serializer this router speaks, by id, in order of preference.
SERIALIZERS: Final[Mapping[str, WampSerializer]] = _available()
#: The non-batched ones by their RawSocket number.
RAWSOCKET_SERIALIZERS: Final[Mapping[int, WampSerializer]] = {
    s.rawsocket_id: s for s in SERIALIZERS.values() if s.rawsocket_id
}
JSON: Final = SERIALIZERS["json"]
#: C{json.batched} as Autobahn-Python speaks it (see
#: L{AUTOBAHN_JSON_BATCH_SEPARATOR}).
AUTOBAHN_JSON_BATCHED: Final = WampSerializer(
    "json.batched", False, 0, *_json_batched(AUTOBAHN_JSON_BATCH_SEPARATOR)
)


def answering(serializer: WampSerializer, payload: bytes) -> WampSerializer:
    """
    The serializer to answer a peer with, after it sent C{payload} with
    C{serializer}: for C{json.batched}, the variant whose separator it used
    (so Autobahn-Python clients are answered as they expect), else the same.
    """
    if serializer.id != "json.batched":
        return serializer
    if payload.endswith(AUTOBAHN_JSON_BATCH_SEPARATOR):
        return AUTOBAHN_JSON_BATCHED
    return SERIALIZERS["json.batched"]


def by_subprotocol(subprotocol: str) -> WampSerializer | None:
    """
    The serializer a WebSocket subprotocol asks for, if this router has it.
    """
    if not subprotocol.startswith(SUBPROTOCOL_PREFIX):
        return None
    return SERIALIZERS.get(subprotocol[len(SUBPROTOCOL_PREFIX) :])


def subprotocols() -> list[str]:
    """
    Every WAMP subprotocol this router accepts.
    """
    return [s.subprotocol for s in SERIALIZERS.values()]
