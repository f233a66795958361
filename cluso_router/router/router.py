"""
The router: who is connected, who listens to what, and getting each event
to every subscriber. It owns no sockets, so it is tested with fake sessions.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from cluso_router._reactor import default_reactor
from cluso_router._time import iso_timestamp
from cluso_router._version import __version__
from cluso_router.interfaces import IAudienceResolver, IBackplane, IPublisher, ISession
from cluso_router.router.channels import ChannelRegistry
from cluso_router.router.conflation import KeyFunction, keyed_frame
from cluso_router.router.event import (
    DeliveryReport,
    Event,
    Extras,
    encode_data,
    new_publication_id,
)
from cluso_router.router.history import MemoryHistory, Position, Recovery
from cluso_router.router.procedures import ProcedureRegistry
from cluso_router.router.stats import QueueCounters
from cluso_router.router.subscriptions import (
    ExactIndex,
    Match,
    PrefixIndex,
    Subscription,
    WildcardIndex,
)
from cluso_router.router.writes import WriteCoalescer

CLOSE_GOING_AWAY: Final = 1001
#: Seconds between sweeps that free expired history of idle channels.
HISTORY_EXPIRY_INTERVAL: Final = 5.0

#: Channels counted one by one in the per-channel statistics; events on
#: channels beyond these are counted under L{OTHER_CHANNELS}, so clients
#: publishing on ever new names cannot grow them without bound.
MAX_COUNTED_CHANNELS: Final = 1000
OTHER_CHANNELS: Final = "(other)"
#: Upper bounds, in seconds, of the fan-out time histogram's buckets.
FANOUT_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


@implementer(IPublisher, IBackplane)
class Router(Service):
    """
    Sessions, subscriptions and fan-out for one node.

    Subscriptions are kept twice: in one index per match policy
    (L{cluso_router.router.subscriptions}) for broadcasting, and as each session's own
    channels (exact) or the router's record of its patterns for cleanup, so
    broadcast costs O(subscribers) and cleanup O(own subscriptions).
    """

    log = Logger()
    name = "router"
    #: As a backplane (a lone node's): it numbers and delivers at once.
    synchronous = True
    backplane_status = "ok"

    def __init__(
        self,
        cwd: str = "",
        clock: IReactorTime | None = None,
        wallclock: Callable[[], float] = time.time,
        history: MemoryHistory | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cwd = cwd
        self.clock: IReactorTime = clock if clock is not None else default_reactor()
        #: The channels claimed by the parts that publish on them.
        self.claims = ChannelRegistry()
        self.procedures = ProcedureRegistry()
        self.published: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        #: Requests and handshakes refused, by reason (host, origin, token, capacity).
        self.refusals: Counter[str] = Counter()
        #: Parts of the server that do not work, with why (an event source
        #: that failed to start, say); /api/health reports them.
        self.problems: dict[str, str] = {}
        #: Connections this server closed, by close code.
        self.closes: Counter[int] = Counter()
        self.rate_limited = 0
        self.queue_counters = QueueCounters()
        #: Joins what a burst gives each session into one write
        #: (L{cluso_router.router.writes}).
        self.writes = WriteCoalescer(self.clock)
        #: Broadcasts by fan-out time, one count per L{FANOUT_BUCKETS} bucket
        #: plus one for longer, and their total time.
        self.fanout_counts = [0] * (len(FANOUT_BUCKETS) + 1)
        self.fanout_seconds = 0.0
        self._timer = timer
        self._wallclock = wallclock
        self._sessions: dict[str, ISession] = {}
        #: Sessions by the dialect of their encoder (C{json}, C{wamp}, C{mcp}).
        self.dialects: Counter[str] = Counter()
        self._indexes: dict[Match, Any] = {
            "exact": ExactIndex(),
            "prefix": PrefixIndex(),
            "wildcard": WildcardIndex(),
        }
        self._patterns_of: dict[ISession, set[tuple[Match, str]]] = {}
        self._has_patterns = False
        #: Sessions whose dialect takes an event once per matching subscription.
        self._per_subscription_sessions = 0
        self.history = history if history is not None else MemoryHistory(self.clock)
        self._started_at = self.clock.seconds()
        self._closing: dict[str, Deferred[None]] = {}
        self._expiry: LoopingCall | None = None
        self._warned_not_running = False
        #: Frames kept back from sessions that are being replayed a
        #: channel's history: channel -> session -> [(seq, frame)].
        self._holds: dict[str, dict[ISession, list[tuple[int, bytes]]]] = {}
        #: Resolves the WAMP identities a publication names (its
        #: L{cluso_router.router.event.Audience}) to this node's sessions.
        self.audience: IAudienceResolver | None = None
        self.procedures.register("server.info", self.server_info)

    # sessions

    def register_session(self, session: ISession) -> None:
        if not self.running and not self._warned_not_running:
            self._warned_not_running = True
            self.log.warn(
                "A client connected to a Router whose service is not running: no ping "
                "sweeps, history expiry or 1001 at shutdown. Give the Router (or the "
                "ClusoService) to your application's MultiService."
            )
        if session.connection_id in self._sessions:
            raise ValueError(f"duplicate connection id {session.connection_id}")
        self._sessions[session.connection_id] = session
        self.dialects[session.encoder.dialect] += 1
        if session.encoder.per_subscription:
            self._per_subscription_sessions += 1

    def unregister_session(self, session: ISession) -> None:
        """
        Forget C{session} and every subscription it held; idempotent.
        """
        if self._sessions.get(session.connection_id) is not session:
            return
        del self._sessions[session.connection_id]
        self.dialects[session.encoder.dialect] -= 1
        if not self.dialects[session.encoder.dialect]:
            del self.dialects[session.encoder.dialect]
        if session.encoder.per_subscription:
            self._per_subscription_sessions -= 1
        channels, session.channels = session.channels, ()
        for channel in channels:
            self._remove_subscriber("exact", channel, session)
        for match, pattern in self._patterns_of.pop(session, ()):
            self._remove_subscriber(match, pattern, session)
        if self._holds:
            for channel in [c for c, held in self._holds.items() if session in held]:
                self._drop_hold(channel, session)
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

    def subscribe(self, session: ISession, channel: str, match: Match = "exact") -> bool:
        """
        Add C{session} to C{channel} (a pattern unless C{match} is
        C{exact}); C{False} if it was already there.
        """
        if match == "exact":
            if channel in session.channels:
                return False
            session.channels = (*session.channels, channel)
        else:
            held = self._patterns_of.setdefault(session, set())
            if (match, channel) in held:
                return False
            held.add((match, channel))
        index = self._indexes[match]
        subscription = index.get(channel)
        if subscription is None:
            subscription = Subscription(channel, match, iso_timestamp(self._wallclock()))
            index.add(subscription)
        subscription.sessions.add(session)
        self._has_patterns = bool(len(self._indexes["prefix"]) or len(self._indexes["wildcard"]))
        return True

    def unsubscribe(self, session: ISession, channel: str, match: Match = "exact") -> bool:
        """
        Remove C{session} from C{channel} under C{match}; C{False} if it was
        not there.
        """
        if match == "exact":
            if channel not in session.channels:
                return False
            session.channels = tuple(c for c in session.channels if c != channel)
        else:
            held = self._patterns_of.get(session)
            if not held or (match, channel) not in held:
                return False
            held.discard((match, channel))
            if not held:
                del self._patterns_of[session]
        self._remove_subscriber(match, channel, session)
        return True

    def _remove_subscriber(self, match: Match, channel: str, session: ISession) -> None:
        index = self._indexes[match]
        subscription = index.get(channel)
        if subscription is None:
            return
        subscription.sessions.discard(session)
        if not subscription.sessions:
            index.remove(subscription)
            self._has_patterns = bool(
                len(self._indexes["prefix"]) or len(self._indexes["wildcard"])
            )

    def subscription_count(self, session: ISession) -> int:
        """
        How many subscriptions C{session} holds, exact and pattern.
        """
        return len(session.channels) + len(self._patterns_of.get(session, ()))

    def subscriber_counts(self) -> Mapping[str, int]:
        """
        Subscribers of each exact channel.
        """
        return {s.pattern: len(s.sessions) for s in self._indexes["exact"]}

    def pattern_counts(self) -> Mapping[str, Mapping[str, int]]:
        """
        Subscribers of each prefix and wildcard pattern.
        """
        return {
            match: {s.pattern: len(s.sessions) for s in self._indexes[match]}
            for match in ("prefix", "wildcard")
        }

    def subscription(self, channel: str, match: Match = "exact") -> Subscription | None:
        """
        The subscription to C{channel} under C{match}, if anyone holds it.
        """
        subscription: Subscription | None = self._indexes[match].get(channel)
        return subscription

    def subscriptions(self) -> Iterator[Subscription]:
        """
        Every subscription, of every match policy.
        """
        for index in self._indexes.values():
            yield from index

    def matching_subscriptions(self, channel: str) -> list[Subscription]:
        """
        Every subscription an event on C{channel} goes to, exact first.
        """
        subscriptions = list(self._indexes["exact"].matching(channel))
        if self._has_patterns:
            subscriptions.extend(self._indexes["prefix"].matching(channel))
            subscriptions.extend(self._indexes["wildcard"].matching(channel))
        return subscriptions

    # history

    def position(self, channel: str) -> Position:
        return self.history.position(channel)

    def since(self, channel: str, seq: int, epoch: str) -> Recovery:
        return self.history.since(channel, seq, epoch)

    def hold(self, session: ISession, channel: str) -> None:
        """
        Keep back C{session}'s events on C{channel} until L{release}: while
        its missed events are fetched from elsewhere, live ones must not
        overtake them.
        """
        self._holds.setdefault(channel, {})[session] = []

    def release(self, session: ISession, channel: str, after: int) -> None:
        """
        Stop holding C{session} on C{channel} and hand it the held events
        numbered above C{after} (those below were part of its replay).
        """
        for seq, frame in self._drop_hold(channel, session):
            if seq > after:
                session.deliver(frame)

    def _drop_hold(self, channel: str, session: ISession) -> list[tuple[int, bytes]]:
        held = self._holds.get(channel)
        if held is None:
            return []
        frames = held.pop(session, [])
        if not held:
            del self._holds[channel]
        return frames

    # publishing

    def conflate(self, channel: str, key: KeyFunction | None) -> None:
        """
        Declare events on C{channel}, a channel nobody claims, conflatable:
        C{key} maps an event's data to a key (or C{None}), and a client that
        is behind gets only the newest queued event per key. C{None} makes
        every event count again. Claimed channels declare their key with
        their claim (L{cluso_router.router.channels}).
        """
        self.claims.set_key(channel, key)

    def publish(
        self,
        channel: str,
        data: Any,
        extras: Extras | None = None,
        exclude: AbstractSet[ISession] = frozenset(),
        eligible: AbstractSet[ISession] | None = None,
    ) -> DeliveryReport:
        """
        Stamp C{data} as the next event on C{channel}, keep it in the
        channel's history and deliver it here; see L{deliver} for
        C{exclude} and C{eligible}. C{extras} is what a WAMP publisher gave
        beyond C{data} (its binary values are allowed).

        @raise InvalidEvent: for a bad channel name or data that is not
            strict JSON; nothing is numbered, kept or sent.
        """
        encoded = encode_data(channel, data, binary=extras is not None)
        event = self.history.record(
            channel,
            data,
            iso_timestamp(self._wallclock()),
            encoded,
            new_publication_id(),
            extras,
        )
        return self.deliver(event, exclude, eligible)

    def publish_many(self, channel: str, items: Sequence[Any]) -> list[DeliveryReport]:
        """
        Publish each of C{items} on C{channel}, in order, as one burst: each
        subscriber gets them all in one write.

        @raise InvalidEvent: when any item is not strict JSON (or the
            channel name is bad), before any of them is numbered or sent.
        """
        encoded = [encode_data(channel, data) for data in items]
        timestamp = iso_timestamp(self._wallclock())
        with self.writes.batch():
            return [
                self.deliver(
                    self.history.record(channel, data, timestamp, body, new_publication_id(), None)
                )
                for data, body in zip(items, encoded, strict=True)
            ]

    def deliver(
        self,
        event: Event,
        exclude: AbstractSet[ISession] = frozenset(),
        eligible: AbstractSet[ISession] | None = None,
    ) -> DeliveryReport:
        """
        Hand C{event} to every session subscribed to its channel, once each
        even when several of its subscriptions match; sessions of a dialect
        whose frames name the subscription (WAMP) get it once per matching
        subscription, as that dialect requires. Sessions in C{exclude}, and
        when C{eligible} is given those not in it, are left out (WAMP's
        publisher exclusion and eligibility).

        Each wire dialect encodes and frames the event once (once per
        subscription for dialects whose frames name the subscription); the
        same bytes then go to all of that dialect's subscribers. A
        subscriber that fails is logged and counted and never stops the
        others.
        """
        channel = event.channel
        counted = (
            channel
            if channel in self.published or len(self.published) < MAX_COUNTED_CHANNELS
            else OTHER_CHANNELS
        )
        self.published[counted] += 1
        subscriptions = self.matching_subscriptions(channel)
        if not subscriptions:
            return DeliveryReport(0, 0, event.publication)
        started = self._timer()
        extras = event.extras
        if extras is not None and extras.audience is not None and self.audience is not None:
            excluded, limited = self.audience.resolve(extras.audience)
            exclude = exclude | excluded
            if limited is not None:
                eligible = limited if eligible is None else eligible & limited
        keyer = self.claims.key_function(channel)
        conflation_key = self._conflation_key(keyer, event) if keyer is not None else None
        frames: dict[Any, bytes] = {}
        seen: set[ISession] | None = set() if len(subscriptions) > 1 else None
        repeat = self._per_subscription_sessions > 0
        delivered = failed = 0
        holds = self._holds.get(channel) if self._holds else None
        if holds is not None:
            self._keep(holds, event, subscriptions, conflation_key)
            exclude = exclude | holds.keys()
        filtered = bool(exclude) or eligible is not None
        for subscription in subscriptions:
            here: dict[Any, bytes] = {}
            sessions: AbstractSet[ISession] | tuple[ISession, ...]
            if not filtered:
                sessions = tuple(subscription.sessions)
            elif eligible is None:
                sessions = subscription.sessions - exclude
            else:
                sessions = (subscription.sessions & eligible) - exclude
            for session in sessions:
                if seen is not None:
                    if session not in seen:
                        seen.add(session)
                    elif not repeat or not session.encoder.per_subscription:
                        continue
                encoder = session.encoder
                frame = here.get(encoder)
                if frame is None:
                    if encoder.per_subscription:
                        frame = self._encode(encoder, event, subscription, conflation_key)
                    else:
                        frame = frames.get(encoder)
                        if frame is None:
                            frame = frames[encoder] = self._encode(
                                encoder, event, subscription, conflation_key
                            )
                    here[encoder] = frame
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
        self.delivered[counted] += delivered
        if failed:
            self.failed[counted] += failed
            self.log.debug(
                "Event on {channel}: {delivered} delivered, {failed} failed",
                channel=channel,
                delivered=delivered,
                failed=failed,
            )
        elapsed = self._timer() - started
        self.fanout_counts[bisect_left(FANOUT_BUCKETS, elapsed)] += 1
        self.fanout_seconds += elapsed
        return DeliveryReport(delivered, failed, event.publication)

    def _keep(
        self,
        holds: Mapping[ISession, list[tuple[int, bytes]]],
        event: Event,
        subscriptions: list[Subscription],
        key: Any,
    ) -> None:
        for session, frames in holds.items():
            for subscription in subscriptions:
                if session in subscription.sessions:
                    frame = self._encode(session.encoder, event, subscription, key)
                    frames.append((event.seq or 0, frame))
                    break

    def _conflation_key(self, keyer: KeyFunction, event: Event) -> Any:
        try:
            return keyer(event.data)
        except Exception:
            self.log.failure(
                "Conflation key of an event on {channel} failed", channel=event.channel
            )
            return None

    @staticmethod
    def _encode(encoder: Any, event: Event, subscription: Subscription, key: Any) -> bytes:
        """
        C{encoder}'s frame of C{event}, marked with its conflation key; a
        frame that names its subscription only replaces one of the same
        subscription.
        """
        frame: bytes = encoder.encode_event(event, subscription)
        if key is None:
            return frame
        if encoder.per_subscription:
            key = (subscription.id, key)
        return keyed_frame(frame, event.channel, key)

    # procedures

    def register(self, name: str, procedure: Callable[[Any], Any]) -> None:
        """
        Make C{procedure} callable by clients as C{name}; see
        L{ProcedureRegistry.register}.
        """
        self.procedures.register(name, procedure)

    def call(
        self, name: str, data: Any, progress: Callable[[Any], None] | None = None
    ) -> Deferred[Any]:
        """
        Call procedure C{name}; see L{ProcedureRegistry.call} for C{progress}.
        """
        return self.procedures.call(name, data, progress)

    def server_info(self, data: object = None) -> dict[str, Any]:
        """
        The C{server.info} procedure: what this node is and how busy it is.
        """
        return {
            "version": __version__,
            "cwd": self.cwd,
            "connections": self.connection_count,
            "channels": dict(self.subscriber_counts()),
            "procedures": self.procedures.names(),
            "problems": dict(sorted(self.problems.items())),
            "uptimeSeconds": round(self.uptime, 3),
        }

    # service

    @property
    def uptime(self) -> float:
        return self.clock.seconds() - self._started_at

    def startService(self) -> None:
        self._started_at = self.clock.seconds()
        super().startService()
        self._expiry = LoopingCall(self.history.expire)
        self._expiry.clock = self.clock
        self._expiry.start(HISTORY_EXPIRY_INTERVAL, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Close every session with 1001 (going away) and fire once all of them
        are gone; sessions that do not finish the closing handshake within
        C{timeout} seconds are aborted.
        """
        super().stopService()
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        self._expiry = None
        self.writes.stop()
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
