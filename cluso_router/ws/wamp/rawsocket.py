"""
WAMP over RawSocket: a TCP connection that opens with a four-octet
handshake naming a serializer and the largest message each side takes,
then carries length-prefixed frames (a WAMP message, a PING or a PONG).

Written against the transport's specification rather than Autobahn's
RawSocket protocol, so that refusals are answered with the error
handshake the specification defines (Autobahn drops the connection
without a word) and PING is answered with PONG.
"""

from __future__ import annotations

import math
from typing import Any, Final

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from cluso_router.interfaces import IPublisher
from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.ws.context import ConnectionContext
from cluso_router.ws.limits import Limits
from cluso_router.ws.wamp.handler import WampHandler, open_wamp
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.serializers import RAWSOCKET_SERIALIZERS
from cluso_router.ws.wamp.session import WampSession
from cluso_router.ws.wamp.wire import RAWSOCKET, wire

MAGIC: Final = 0x7F
#: Handshake error codes (the high nibble of the second reply octet).
ERROR_SERIALIZER: Final = 1
ERROR_LENGTH: Final = 2
ERROR_RESERVED: Final = 3
ERROR_CONNECTIONS: Final = 4
#: Frame types (the low three bits of a frame's first octet).
FRAME_MESSAGE: Final = 0
FRAME_PING: Final = 1
FRAME_PONG: Final = 2
#: What a handshake can say about a length: 2**9 to 2**24 octets.
MIN_LENGTH_EXPONENT: Final = 9
MAX_LENGTH_EXPONENT: Final = 24


def frame_length(header: bytes) -> int:
    """
    The payload length a frame header announces: 24 bits, and a 25th in
    the type octet for frames of 16 MiB and more.
    """
    return int.from_bytes(header[1:4], "big") | (0x1000000 if header[0] & 0x08 else 0)


def is_one_frame(data: bytes) -> bool:
    """
    Whether C{data} is exactly one whole frame: its header and as many
    payload bytes as the header announces, nothing more.
    """
    return len(data) >= 4 and len(data) == 4 + frame_length(data)


def length_exponent(max_bytes: int) -> int:
    """
    The handshake's length nibble for a peer that takes messages of up to
    C{max_bytes}: the largest power of two it names that is not above it
    (but at least 512 octets, the smallest the handshake can say).
    """
    exponent = math.floor(math.log2(max(max_bytes, 1)))
    return min(max(exponent, MIN_LENGTH_EXPONENT), MAX_LENGTH_EXPONENT) - MIN_LENGTH_EXPONENT


class RawSocketSession(WampSession):
    """
    A WAMP session on RawSocket; it never sends a frame longer than the
    peer said it takes: such a frame closes the connection instead.
    """

    peer_max_length: int = 2**24

    def deliver(self, frame: bytes) -> bool:
        if len(frame) - 4 > self.peer_max_length:
            self.log.warn(
                "Closing RawSocket {connection_id}: a {size}-byte message is more than it takes",
                connection_id=self.connection_id,
                size=len(frame) - 4,
            )
            self.abort()
            return False
        return super().deliver(frame)


class RawSocketProtocol(Protocol):
    """
    One RawSocket connection: the handshake, then frames for its
    L{WampHandler}.
    """

    log = Logger()
    factory: RawSocketFactory
    _handler: WampHandler | None = None
    session: RawSocketSession | None = None
    _deadline: IDelayedCall | None = None

    def __init__(self) -> None:
        self._buffer = b""
        self._max_length = 0

    def connectionMade(self) -> None:
        """
        A connection that has not shaken hands counts as joining the realm:
        refused when too many are, and dropped after the realm's deadline.
        """
        realm = self.factory.context.realm
        if not realm.admits_unjoined():
            self.factory.context.router.refusals["unjoined"] += 1
            self._drop("too many connections joining")
            return
        realm.unjoined += 1
        self._deadline = self.factory.context.router.clock.callLater(
            realm.hello_timeout, self._too_slow
        )

    def _too_slow(self) -> None:
        self._deadline = None
        self.factory.context.realm.unjoined -= 1
        self._drop("no handshake in time")

    def _shaken(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            self.factory.context.realm.unjoined -= 1
            if deadline.active():
                deadline.cancel()

    def dataReceived(self, data: bytes) -> None:
        """
        Handle a read of several frames as one batch of writes (each
        subscriber gets what they publish in one write); a read of exactly
        one frame has nothing to join, and its events leave at once.
        """
        if self._handler is not None and not self._buffer and is_one_frame(data):
            self._received(data)
            return
        with self.factory.context.router.writes.batch():
            self._received(data)

    def _received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        if self._handler is None:
            if len(buffer) < 4:
                self._buffer = buffer
                return
            self._buffer = b""
            if not self._handshake(buffer[:4]):
                return
            offset = 4
        size = len(buffer)
        while size - offset >= 4 and self.transport is not None:
            header = buffer[offset : offset + 4]
            if header[0] & 0xF0:
                self._drop("reserved bits set in a frame header")
                return
            length = frame_length(header)
            if length > self._max_length:
                self._drop(f"a {length}-byte frame is more than the {self._max_length} announced")
                return
            if size - offset < 4 + length:
                break
            payload = buffer[offset + 4 : offset + 4 + length]
            offset += 4 + length
            self._frame(header[0] & 0x07, payload)
        self._buffer = buffer[offset:]

    def _handshake(self, octets: bytes) -> bool:
        """
        Answer the client's handshake: agree and open the WAMP session, or
        reply with the error the specification names and close.
        """
        self._shaken()
        context = self.factory.context
        if octets[0] != MAGIC:
            self._drop("not a RawSocket handshake")
            return False
        if octets[2] or octets[3]:
            return self._refuse(ERROR_RESERVED)
        serializer = RAWSOCKET_SERIALIZERS.get(octets[1] & 0x0F)
        if serializer is None:
            return self._refuse(ERROR_SERIALIZER)
        if context.router.connection_count >= context.limits.max_connections:
            context.router.refusals["capacity"] += 1
            return self._refuse(ERROR_CONNECTIONS)
        if not context.realm.admits_unjoined():
            context.router.refusals["unjoined"] += 1
            return self._refuse(ERROR_CONNECTIONS)
        ours = length_exponent(context.limits.max_message_bytes)
        self._max_length = 2 ** (ours + MIN_LENGTH_EXPONENT)
        assert self.transport is not None
        self.transport.write(bytes((MAGIC, (ours << 4) | serializer.rawsocket_id, 0, 0)))
        rawsocket_wire = wire(serializer, RAWSOCKET)
        session = RawSocketSession(
            self,
            self.transport,
            rawsocket_wire.encoder,
            max_queue_bytes=context.limits.max_queue_bytes,
            counters=context.router.queue_counters,
            coalescer=context.router.writes,
        )
        session.peer_max_length = 2 ** ((octets[1] >> 4) + MIN_LENGTH_EXPONENT)
        self.session = session
        self._handler = open_wamp(context, session, rawsocket_wire, False)
        return True

    def _refuse(self, code: int) -> bool:
        assert self.transport is not None
        self.transport.write(bytes((MAGIC, code << 4, 0, 0)))
        self.transport.loseConnection()
        return False

    def _frame(self, kind: int, payload: bytes) -> None:
        assert self._handler is not None
        assert self.session is not None
        if kind == FRAME_MESSAGE:
            self._handler.received(payload, self._handler.wire.serializer.binary)
        elif kind == FRAME_PING:
            self.session.heard = True
            self.session.deliver(_control(FRAME_PONG, payload))
        elif kind == FRAME_PONG:
            self.session.heard = True
        else:
            self._drop(f"unknown frame type {kind}")

    def _drop(self, reason: str) -> None:
        self.log.debug("Dropping RawSocket connection: {reason}", reason=reason)
        self._buffer = b""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # what a session needs of its connection

    def sendPing(self, payload: bytes | None = None) -> None:
        if self.session is not None:
            self.session.deliver(_control(FRAME_PING, payload or b""))

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        """
        RawSocket has no close frame: the WAMP session said goodbye (or
        ABORT) already, so the connection just ends once written.
        """
        if self.transport is not None:
            self.transport.loseConnection()

    def dropConnection(self, abort: bool = False) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any = None) -> None:
        self._shaken()
        session, self.session = self.session, None
        if self._handler is not None:
            self._handler.closed()
        if session is not None:
            session.stopProducing()
            self.factory.context.router.unregister_session(session)

    def getPeer(self) -> IAddress | None:
        return self.transport.getPeer() if self.transport is not None else None


def _control(kind: int, payload: bytes) -> bytes:
    return bytes((kind,)) + len(payload).to_bytes(3, "big") + payload


class RawSocketFactory(Factory):
    """
    Builds L{RawSocketProtocol} connections joining C{realm} (shared with
    the WebSocket endpoint); the same limits and authentication apply, the
    token only through WAMP authentication (there is no HTTP handshake).
    """

    protocol = RawSocketProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        router: Router,
        realm: WampRealm,
        publisher: IPublisher | None = None,
        limits: Limits | None = None,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.context = ConnectionContext(
            router,
            publisher if publisher is not None else router,
            limits if limits is not None else Limits(),
            policy,
            realm,
        )
