"""
Notification streams of MCP clients, as sessions of the router.

Each MCP client that listens for notifications (a 2025-11-25 session, with
or without its C{GET} stream open; a 2026-07-28 C{subscriptions/listen}
response) is a L{cluso_router.ws.session.Session} registered with the
router, like a WebSocket client: it is counted and limited with the other
connections, subscribes to channels through the router's index, and gets
events through the same bounded, conflating send queue. L{NotificationStream}
stands in for its socket: it writes Server-Sent Events on the HTTP response
that is open, and while none is (a legacy session between two C{GET}
streams) it keeps the session paused, so notifications wait in the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.web.server import Request
from zope.interface import implementer

from cluso_router.interfaces import IFrameEncoder
from cluso_router.mcp.protocol import KEEP_ALIVE, META_SUBSCRIPTION, notification, sse
from cluso_router.mcp.resources import channel_uri
from cluso_router.router.conflation import keyed_frame
from cluso_router.router.event import Event
from cluso_router.ws.session import Session

UPDATED: Final = "notifications/resources/updated"
TOOLS_CHANGED: Final = "notifications/tools/list_changed"
RESOURCES_CHANGED: Final = "notifications/resources/list_changed"
#: Seconds a legacy session may go without a request or an open stream
#: before the ping sweep forgets it.
DEFAULT_IDLE_TIMEOUT: Final = 600.0


@implementer(IFrameEncoder)
class NotificationEncoder:
    """
    Encodes an event as the notification that its channel's resource
    changed. Every such notification of one channel says the same, so they
    conflate with each other in a queue that waits; a client reads the
    resource again to see what changed.

    @param subscription_id: the C{subscriptions/listen} request the
        notifications answer (2026-07-28), else C{None}.
    """

    dialect = "mcp"
    per_subscription = False

    def __init__(self, subscription_id: Any = None) -> None:
        self._meta = None if subscription_id is None else {META_SUBSCRIPTION: subscription_id}

    def _params(self, **params: Any) -> dict[str, Any]:
        return params if self._meta is None else {"_meta": self._meta, **params}

    def encode_event(self, event: Event, subscription: object = None) -> bytes:
        params = self._params(uri=channel_uri(event.channel))
        return keyed_frame(sse(notification(UPDATED, params)), event.channel, UPDATED)

    def notice(self, method: str) -> bytes:
        """
        A list-changed notification; a newer one replaces a queued one.
        """
        params = self._params() or None
        return keyed_frame(sse(notification(method, params)), "", method)


#: The encoder of legacy sessions, which share their frames.
LEGACY_ENCODER: Final = NotificationEncoder()


class NotificationSession(Session):
    """
    The router session of an MCP client. The ping sweep's ping is an SSE
    comment on the open stream (in order, within the queue's budget; a
    dead connection then fails and ends it), and the session counts as
    heard for as long as its stream says the client is there.
    """

    __slots__ = ()

    def ping(self) -> None:
        stream: NotificationStream = self._transport
        if stream.is_open:
            self.deliver(KEEP_ALIVE)
        if stream.alive():
            self.heard = True


@implementer(IPushProducer)
class NotificationStream:
    """
    The transport and the connection of one MCP client's router session.

    @param keep: whether the session outlives the HTTP response it is
        written on (a legacy session: it waits for the next C{GET} stream)
        or ends with it (a C{subscriptions/listen} response).
    @param on_end: called once when the session ends, for whatever reason
        (the client ended it, its queue overflowed, the ping sweep found it
        idle, the server is stopping).
    """

    def __init__(
        self,
        clock: IReactorTime,
        keep: bool,
        on_end: Callable[[], None],
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._keep = keep
        self._on_end = on_end
        self._idle_timeout = idle_timeout
        self._request: Request | None = None
        self._producer: NotificationSession | None = None
        self._last_seen = clock.seconds()
        self.ended = False

    @property
    def is_open(self) -> bool:
        return self._request is not None

    # The transport of a Session.

    def registerProducer(self, producer: NotificationSession, streaming: bool) -> None:
        self._producer = producer
        if self._request is None:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, frame: bytes) -> None:
        if self._request is not None:
            self._request.write(frame)

    # The connection of a Session.

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        self.end()

    def dropConnection(self, abort: bool = False) -> None:
        self.end()

    # The producer of the open response.

    def pauseProducing(self) -> None:
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        if self._producer is not None:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        if self._request is not None:
            self._lost(self._request)

    # Its own life.

    def alive(self) -> bool:
        """
        Whether the client is there: its stream is open, or (a legacy
        session between streams) it was heard from within the idle timeout.
        """
        if self._request is not None:
            return True
        return self._keep and self._clock.seconds() - self._last_seen < self._idle_timeout

    def seen(self) -> None:
        """
        The client was heard from.
        """
        self._last_seen = self._clock.seconds()
        if self._producer is not None:
            self._producer.heard = True

    def open(self, request: Request) -> None:
        """
        Write from now on to C{request}, an event stream whose headers are
        set, starting with whatever waited.
        """
        assert self._request is None
        assert not self.ended
        self._request = request
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: self._lost(request))
        self.seen()
        if self._producer is not None:
            self._producer.resumeProducing()

    def _lost(self, request: Request) -> None:
        if request is not self._request:
            return
        self._request = None
        if self._keep:
            if self._producer is not None:
                self._producer.pauseProducing()
        else:
            self.end()

    def end(self, last: bytes = b"") -> None:
        """
        End the session: write C{last} and finish the open response, and
        tell the owner; idempotent.
        """
        if self.ended:
            return
        self.ended = True
        request, self._request = self._request, None
        if request is not None and not request._disconnected:
            if last:
                request.write(last)
            request.unregisterProducer()
            request.finish()
        self._on_end()
