"""
The router: who is connected, who listens to what, and getting each event
to every subscriber. It owns no sockets, so it is tested with fake sessions.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ._reactor import default_reactor
from ._time import iso_timestamp
from ._version import __version__
from .event import DeliveryReport, Event
from .interfaces import IPublisher, ISession
from .procedures import ProcedureRegistry

#: Channels only the server publishes on; clients may not C{send} to them.
SERVER_CHANNELS: Final = frozenset(
    {"files", "diagnostics", "ai-response", "search", "validation", "git"}
)

CLOSE_GOING_AWAY: Final = 1001


@implementer(IPublisher)
class Router(Service):
    """
    Sessions, subscriptions and fan-out for one node.

    Subscriptions are kept twice, as C{channel -> sessions} for broadcasting
    and as each session's own channel set for cleanup, so both cost
    O(subscribers) and O(own channels) respectively.
    """

    log = Logger()
    name = "router"

    def __init__(
        self,
        cwd: str = "",
        clock: IReactorTime | None = None,
        wallclock: Callable[[], float] = time.time,
        server_channels: frozenset[str] = SERVER_CHANNELS,
    ) -> None:
        self.cwd = cwd
        self.clock: IReactorTime = clock if clock is not None else default_reactor()
        self.server_channels = server_channels
        self.procedures = ProcedureRegistry()
        self.published: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._wallclock = wallclock
        self._sessions: dict[str, ISession] = {}
        self._subscribers: dict[str, set[ISession]] = {}
        self._started_at = self.clock.seconds()
        self._closing: dict[str, Deferred[None]] = {}
        self.procedures.register("server.info", self.server_info)

    # sessions

    def register_session(self, session: ISession) -> None:
        if session.connection_id in self._sessions:
            raise ValueError(f"duplicate connection id {session.connection_id}")
        self._sessions[session.connection_id] = session

    def unregister_session(self, session: ISession) -> None:
        """
        Forget C{session} and every subscription it held; idempotent.
        """
        if self._sessions.get(session.connection_id) is not session:
            return
        del self._sessions[session.connection_id]
        for channel in session.channels:
            self._remove_subscriber(channel, session)
        session.channels.clear()
        waiting = self._closing.pop(session.connection_id, None)
        if waiting is not None:
            waiting.callback(None)

    def session(self, connection_id: str) -> ISession | None:
        return self._sessions.get(connection_id)

    def sessions(self) -> Iterator[ISession]:
        return iter(list(self._sessions.values()))

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    # subscriptions

    def subscribe(self, session: ISession, channel: str) -> bool:
        """
        Add C{session} to C{channel}; C{False} if it was already there.
        """
        if channel in session.channels:
            return False
        session.channels.add(channel)
        self._subscribers.setdefault(channel, set()).add(session)
        return True

    def unsubscribe(self, session: ISession, channel: str) -> bool:
        """
        Remove C{session} from C{channel}; C{False} if it was not there.
        """
        if channel not in session.channels:
            return False
        session.channels.discard(channel)
        self._remove_subscriber(channel, session)
        return True

    def _remove_subscriber(self, channel: str, session: ISession) -> None:
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            return
        subscribers.discard(session)
        if not subscribers:
            del self._subscribers[channel]

    def subscriber_counts(self) -> Mapping[str, int]:
        return {channel: len(s) for channel, s in self._subscribers.items()}

    # publishing

    def publish(self, channel: str, data: Any) -> DeliveryReport:
        """
        Stamp C{data} as an event on C{channel} and deliver it here.
        """
        event = Event(channel, data, iso_timestamp(self._wallclock()))
        return self.deliver(event)

    def deliver(self, event: Event) -> DeliveryReport:
        """
        Hand C{event} to every subscriber of its channel.

        Each wire dialect encodes and frames the event once; the same bytes
        then go to all of that dialect's subscribers. A subscriber that fails
        is logged and counted and never stops the others.
        """
        channel = event.channel
        self.published[channel] += 1
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return DeliveryReport(0, 0)
        frames: dict[Any, bytes] = {}
        delivered = failed = 0
        for session in tuple(subscribers):
            encoder = session.encoder
            frame = frames.get(encoder)
            if frame is None:
                frame = frames[encoder] = encoder.encode_event(event)
            try:
                ok = session.deliver(frame)
            except Exception:
                self.log.failure(
                    "Delivery to {connection_id} on {channel} failed",
                    connection_id=session.connection_id,
                    channel=channel,
                )
                ok = False
            if ok:
                delivered += 1
            else:
                failed += 1
        self.delivered[channel] += delivered
        if failed:
            self.failed[channel] += failed
            self.log.info(
                "Event on {channel}: {delivered} delivered, {failed} failed",
                channel=channel,
                delivered=delivered,
                failed=failed,
            )
        return DeliveryReport(delivered, failed)

    # procedures

    def register(self, name: str, procedure: Callable[[Any], Any]) -> None:
        """
        Make C{procedure} callable by clients as C{name}; see
        L{ProcedureRegistry.register}.
        """
        self.procedures.register(name, procedure)

    def call(self, name: str, data: Any) -> Deferred[Any]:
        return self.procedures.call(name, data)

    def server_info(self, data: object = None) -> dict[str, Any]:
        """
        The C{server.info} procedure: what this node is and how busy it is.
        """
        return {
            "version": __version__,
            "cwd": self.cwd,
            "connections": self.connection_count,
            "channels": dict(self.subscriber_counts()),
            "procedures": list(self.procedures),
            "uptimeSeconds": round(self.uptime, 3),
        }

    # service

    @property
    def uptime(self) -> float:
        return self.clock.seconds() - self._started_at

    def startService(self) -> None:
        self._started_at = self.clock.seconds()
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Close every session with 1001 (going away) and fire once all of them
        are gone; sessions that do not finish the closing handshake within
        C{timeout} seconds are aborted.
        """
        super().stopService()
        return self.close_all(CLOSE_GOING_AWAY, "server shutting down")

    def close_all(self, code: int, reason: str, timeout: float = 2.0) -> Deferred[None]:
        if not self._sessions:
            return succeed(None)
        waits = []
        for session in list(self._sessions.values()):
            done: Deferred[None] = Deferred()
            self._closing[session.connection_id] = done
            waits.append(done)
            session.close(code, reason)
        abort_call = self.clock.callLater(timeout, self._abort_remaining)
        finished: Deferred[Any] = DeferredList(waits)

        def cancel_abort(_: object) -> None:
            if abort_call.active():
                abort_call.cancel()

        finished.addCallback(cancel_abort)
        return finished

    def _abort_remaining(self) -> None:
        for session in list(self._sessions.values()):
            self.log.info(
                "Aborting {connection_id}: no close handshake in time",
                connection_id=session.connection_id,
            )
            session.abort()
            self.unregister_session(session)
