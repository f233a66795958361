"""
One connection's state as the router sees it, and its ordered send path.
"""

from __future__ import annotations

import secrets
import string
import time
from collections import deque
from collections.abc import Hashable
from typing import Any, Final, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from cluso_router._json import dumps
from cluso_router.interfaces import IFrameEncoder, ISession
from cluso_router.router.conflation import KeyedFrame
from cluso_router.router.stats import QueueCounters
from cluso_router.router.writes import MAX_GATHERED_BYTES, UNTIMED, WriteCoalescer
from cluso_router.ws._directwrite import buffered_bytes, supports_direct_write, write_frame
from cluso_router.ws.json.codec import text_frame

#: Close code sent to a client that stopped reading while events piled up.
CLOSE_SLOW_CONSUMER: Final = 4008
DEFAULT_MAX_QUEUE_BYTES: Final = 1024 * 1024
#: Superseded queue entries tolerated before the queue is compacted.
_COMPACT_AFTER: Final = 64

_ALPHABET: Final = string.digits + string.ascii_lowercase
#: An unmasked ping frame without payload.
_PING: Final = b"\x89\x00"


def new_connection_id() -> str:
    """
    An id shaped like the original server's (C{conn-<ms>-<base36>}), with a
    random tail long enough not to collide.
    """
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"conn-{int(time.time() * 1000)}-{tail}"


class Connection(Protocol):
    """
    What a session needs from the protocol object that owns the socket.
    """

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None: ...

    def dropConnection(self, abort: bool = False) -> None: ...


class _Slot:
    """
    A queued conflatable frame; C{frame} is C{None} once a newer frame with
    the same key replaced it.
    """

    __slots__ = ("frame",)

    def __init__(self, frame: KeyedFrame) -> None:
        self.frame: KeyedFrame | None = frame


@implementer(ISession, IPushProducer)
class Session:
    """
    A WebSocket client registered with the router.

    Frames go straight to the socket while the transport keeps up. When the
    transport asks its producer (this session) to pause, frames wait in a
    queue bounded in bytes; a client that lets the queue overflow is closed
    with L{CLOSE_SLOW_CONSUMER}, so one slow reader never grows the server's
    memory nor delays anyone else.

    A queued frame of a conflatable event (a L{KeyedFrame}) is dropped when
    a newer one with the same key is queued; the newer one goes to the end,
    so what the client gets is the original sequence minus superseded
    events.
    """

    log = Logger()
    # Thousands of idle sessions: no per-instance dict, and the queue and its
    # key index exist only while the transport is paused.
    __slots__ = (
        "_closed",
        "_coalescer",
        "_connection",
        "_direct",
        "_keyed",
        "_paused",
        "_pending",
        "_pending_bytes",
        "_queue",
        "_queued_bytes",
        "_superseded",
        "_transport",
        "_turn",
        "channels",
        "connection_id",
        "counters",
        "encoder",
        "heard",
        "max_queue_bytes",
    )

    def __init__(
        self,
        connection: Connection,
        transport: Any,
        encoder: IFrameEncoder,
        connection_id: str | None = None,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        counters: QueueCounters | None = None,
        coalescer: WriteCoalescer | None = None,
    ) -> None:
        self.connection_id = connection_id or new_connection_id()
        self.channels: tuple[str, ...] = ()
        self.encoder = encoder
        self.heard = True
        self.max_queue_bytes = max_queue_bytes
        self._connection = connection
        self._transport = transport
        self._direct = supports_direct_write(transport)
        self._paused = False
        self._closed = False
        self.counters = counters if counters is not None else QueueCounters()
        self._coalescer = coalescer if coalescer is not None else UNTIMED
        #: The coalescer's turn in which this session last wrote at once.
        self._turn = -1
        self._queue: deque[bytes | _Slot] | None = None
        self._queued_bytes = 0
        #: What this session gathered in the current batch or turn: one frame as
        #: is, several in a list (made only then: a list per session per
        #: read would be thousands of objects for the garbage collector,
        #: whose full collections then stall the reactor).
        self._pending: bytes | list[bytes] | None = None
        self._pending_bytes = 0
        self._keyed: dict[Hashable, _Slot] | None = None
        self._superseded = 0

    @property
    def queued_bytes(self) -> int:
        """
        Bytes waiting to be sent: in this session's queue and in the
        transport's buffer.
        """
        return self._queued_bytes + buffered_bytes(self._transport)

    def attach(self) -> None:
        """
        Become the transport's streaming producer, replacing any left over
        from the HTTP request that upgraded to WebSocket.
        """
        if getattr(self._transport, "producer", None) is not None:
            self._transport.unregisterProducer()
        self._transport.registerProducer(self, True)

    def send_message(self, message: Any) -> bool:
        """
        Encode C{message} as JSON and send it in order with events.
        """
        return self.deliver(text_frame(dumps(message)))

    def deliver(self, frame: bytes) -> bool:
        if self._closed:
            return False
        if self._paused or self._queue:
            if self._pending is not None:
                self.flush()
            if type(frame) is KeyedFrame:
                return self._enqueue_keyed(frame)
            if self._queued_bytes + len(frame) > self.max_queue_bytes:
                self._overflow()
                return False
            if self._queue is None:
                self._queue = deque()
            self._queue.append(frame)
            self._queued_bytes += len(frame)
            return True
        if len(frame) > self.max_queue_bytes:
            # Not paused, the transport holds at most its buffer size plus
            # one frame; a frame bigger than the whole budget must not be
            # that frame.
            self._overflow()
            return False
        coalescer = self._coalescer
        if coalescer.depth or self._turn == coalescer.turn:
            pending = self._pending
            if pending is None:
                self._pending = frame
                coalescer.gathered(self)
            elif isinstance(pending, list):
                pending.append(frame)
            else:
                self._pending = [pending, frame]
            self._pending_bytes += len(frame)
            if self._pending_bytes > MAX_GATHERED_BYTES:
                self.flush()
            return not self._closed
        if coalescer.timed:
            self._turn = coalescer.turn
            coalescer.wrote_directly()
        if write_frame(self._transport, frame, self._direct):
            return True
        self._closed = True
        return False

    def flush(self) -> None:
        """
        Send what this session gathered in the current batch or turn, in
        one write.
        """
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._pending_bytes = 0
        if self._closed or not pending:
            return
        if isinstance(pending, list):
            self._coalescer.joined += len(pending) - 1
            data = b"".join(pending)
        else:
            data = pending
        if not write_frame(self._transport, data, self._direct):
            self._closed = True

    def ping(self) -> None:
        """
        Send a ping, in order with everything else and within the budget.
        """
        self.deliver(_PING)

    def pong(self, payload: bytes) -> None:
        """
        Answer a client's ping through the same bounded path as events, so
        a client that pings and never reads is closed like any slow reader.
        """
        self.deliver(b"\x8a" + bytes((len(payload),)) + payload)

    def abort(self) -> None:
        self.stopProducing()
        self._connection.dropConnection(abort=True)

    def close(self, code: int, reason: str) -> None:
        """
        Start the closing handshake. Any code a server may send is allowed
        (Autobahn's C{sendClose} only takes 1000 and 3000-4999, which rules
        out 1001 "going away" and 1008 "policy violation").
        """
        self.flush()
        self.stopProducing()
        reason_bytes = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
        self._connection.sendCloseFrame(code, reason_bytes)

    def pauseProducing(self) -> None:
        self._paused = True

    def _enqueue_keyed(self, frame: KeyedFrame) -> bool:
        if self._keyed is None:
            self._keyed = {}
        if self._queue is None:
            self._queue = deque()
        older = self._keyed.get(frame.key)
        freed = len(older.frame) if older is not None and older.frame is not None else 0
        if self._queued_bytes - freed + len(frame) > self.max_queue_bytes:
            self._overflow()
            return False
        if older is not None:
            older.frame = None
            self._queued_bytes -= freed
            self._superseded += 1
            self.counters.conflated[frame.channel] += 1
        slot = self._keyed[frame.key] = _Slot(frame)
        self._queue.append(slot)
        self._queued_bytes += len(frame)
        if self._superseded > _COMPACT_AFTER and self._superseded * 2 > len(self._queue):
            self._queue = deque(
                item for item in self._queue if type(item) is not _Slot or item.frame is not None
            )
            self._superseded = 0
        return True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queue and not self._paused and not self._closed:
            item = self._queue.popleft()
            if isinstance(item, _Slot):
                if item.frame is None:
                    self._superseded -= 1
                    continue
                frame: bytes = item.frame
                if self._keyed is not None:
                    del self._keyed[item.frame.key]
            else:
                frame = item
            self._queued_bytes -= len(frame)
            self._transport.write(frame)
        if not self._queue and not self._paused:
            self._queue = self._keyed = None

    def stopProducing(self) -> None:
        """
        The connection is going away: drop what is queued and refuse more.
        """
        self._closed = True
        self._queue = self._keyed = None
        self._queued_bytes = 0
        self._superseded = 0
        self._pending = None
        self._pending_bytes = 0

    def _overflow(self) -> None:
        self.counters.slow_consumer_closes += 1
        self.log.warn(
            "Closing slow consumer {connection_id}: {queued} bytes queued",
            connection_id=self.connection_id,
            queued=self._queued_bytes,
        )
        self.close(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and recover")

    def __repr__(self) -> str:
        return f"<Session {self.connection_id} channels={sorted(self.channels)}>"
