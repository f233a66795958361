"""
The Redis backplane: several nodes acting as one router.

Publishing runs one Lua script that gives the event its channel's next
C{seq}, appends it to the channel's Stream (entry id C{0-<seq>}, trimmed to
the history size) and PUBLISHes it on the deployment's pub/sub channel.
Every node, the publishing one included, delivers events as they arrive on
its subscriber connection, which Redis feeds in the order the scripts ran:
so each node delivers a channel's events once each and in the same order.

Recovery reads the Stream. A node remembers the last C{seq} it delivered on
each channel; after losing Redis it resubscribes and replays what it missed
from the Streams, and closes (with L{CLOSE_BACKPLANE_GAP}) the sessions of
channels whose history is gone, so their clients reconnect and learn it
(C{recovered: false}).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import txredisapi  # type: ignore[import-untyped]
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred, fail, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cluso_router._time import iso_timestamp
from cluso_router.backplane.envelope import envelope, event_of
from cluso_router.interfaces import IBackplane
from cluso_router.router.event import (
    DeliveryReport,
    Event,
    Extras,
    InvalidEvent,
    encode_data,
    new_publication_id,
)
from cluso_router.router.history import DEFAULT_HISTORY_SIZE, Position, Recovery
from cluso_router.router.router import Router

#: Close code for sessions of a channel whose missed events are gone from
#: Redis (it restarted empty, or trimmed them): reconnect and recover.
CLOSE_BACKPLANE_GAP: Final = 4009
DEFAULT_PREFIX: Final = "cluso:"
#: Seconds a channel's counter and Stream live after its last event.
DEFAULT_TTL: Final = 86400
#: Channels whose last delivered position a node remembers for gap checks.
MAX_TRACKED_CHANNELS: Final = 10_000
#: Live messages held while a node catches up; more mean it cannot keep
#: up, and its events connection starts over.
MAX_BUFFERED: Final = 50_000
#: Epoch a node answers with for a channel it cannot ask Redis about; no
#: real epoch is empty, so a client holding it is always told it may have
#: missed events.
UNKNOWN_EPOCH: Final = ""
#: The first word of a control message (events start with their seq).
CONTROL: Final = "c"

_PUBLISH: Final = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '0-' .. seq, 'p', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local nodes = redis.call('PUBLISH', ARGV[5], seq .. ' ' .. epoch .. ' ' .. ARGV[1])
return {seq, epoch, nodes}
"""

_SINCE: Final = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local entries = {}
if ARGV[2] ~= '' then
  entries = redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[2]) + 1), '+')
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {meta[1], meta[2] or '0', entries}
"""


class BackplaneUnavailable(Exception):
    """
    The event was not published: Redis cannot be reached right now.
    """

    code = "backplane_unavailable"


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """
        Read C{redis://[:password@]host[:port][/db]}.
        """
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"Redis address must look like redis://host:port/db, not {url!r}")
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad port or database number in {url!r}") from None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, db, password)


class _Subscriber(txredisapi.SubscriberProtocol):
    factory: _Factory

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        """
        The events of one read (a burst another node published) reach
        each subscriber in one write.
        """
        with self.factory.backplane.router.writes.batch():
            super().dataReceived(data, unpause)

    def messageReceived(self, pattern: Any, channel: str, message: str) -> None:
        self.factory.backplane.received(message)


class _Factory(Factory):
    """
    Builds txredisapi connections for a L{ClientService}, which reconnects.
    """

    noisy = False
    isLazy = False

    def __init__(
        self,
        protocol: type[Any],
        address: RedisAddress,
        timeout: float,
        backplane: RedisBackplane,
    ) -> None:
        self._protocol = protocol
        self._address = address
        self._timeout = timeout
        self.backplane = backplane

    def buildProtocol(self, addr: Any) -> Any:
        proto = self._protocol(
            "utf-8",
            replyTimeout=self._timeout,
            password=self._address.password,
            dbid=self._address.db or None,
            convertNumbers=False,
        )
        proto.factory = self
        return proto

    def stopTrying(self) -> None:
        """
        Called by txredisapi when AUTH or SELECT fails; the connection is
        closed and retried with backoff like any other failure.
        """

    def connectionError(self, message: str) -> None:
        Logger().error("Redis: {message}", message=message)


def retry_delays(
    initial: float, maximum: float, jitter: Callable[[], float] = random.random
) -> Callable[[int], float]:
    """
    A L{ClientService} retry policy: C{initial} seconds after the first
    failed attempt, doubling up to C{maximum}, plus C{jitter()} seconds so
    nodes that lost Redis together do not retry in step.
    """
    policy = backoffPolicy(initial, maximum, factor=2.0, jitter=jitter)
    return lambda failures: policy(failures - 1)


def _prepare(ready: Callable[[Any], Coroutine[Any, Any, None]], protocol: Any) -> Deferred[None]:
    return ensureDeferred(ready(protocol))


@implementer(IBackplane)
class RedisBackplane(MultiService):
    """
    Publishes through Redis and delivers what comes back on C{router}.

    Two connections, each kept by a L{ClientService}: one for commands, one
    subscribed to the deployment's events. While either is down the node
    keeps serving its own clients, reports C{degraded} and refuses
    publishes with L{BackplaneUnavailable}; Twisted's C{backoffPolicy}
    spaces the attempts from C{retry_initial} seconds, doubling up to
    C{retry_max} (plus up to a second of jitter, so nodes do not retry in
    step). Each time the events connection is back, the node catches up
    on what it missed (L{_catch_up}).
    """

    log = Logger()
    name = "backplane"
    synchronous = False

    def __init__(
        self,
        router: Router,
        address: RedisAddress,
        prefix: str = DEFAULT_PREFIX,
        reactor: IReactorTCP | None = None,
        clock: IReactorTime | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        ttl: int = DEFAULT_TTL,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        timeout: float = 5.0,
        wallclock: Callable[[], float] = time.time,
        retry_policy: Callable[[int], float] | None = None,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        """
        @param retry_policy: seconds before the Nth attempt after a failure
            (default: L{backoffPolicy} from C{retry_initial} to C{retry_max}).
        @param endpoint: where Redis is (default: C{address} over TCP).
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        self.router = router
        self.address = address
        self.prefix = prefix
        self.clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self.history_size = history_size
        self.ttl = ttl
        self.timeout = timeout
        self._wallclock = wallclock
        self.node_id = secrets.token_hex(6)
        self.events_channel = f"{prefix}events"
        self._node_channel = f"{prefix}node:{self.node_id}"
        self._command: Any = None
        self._subscriber: Any = None
        self.connected = False
        self._caught_up = True
        #: Messages that arrived while catching up, delivered after it.
        self._buffer: list[str] | None = None
        self._markers: dict[str, Deferred[None]] = {}
        #: Last position delivered here, per channel.
        self._last: OrderedDict[str, Position] = OrderedDict()
        self.connects = 0
        self.publish_failures = 0
        self.gap_closes = 0
        self.replayed = 0
        policy = retry_policy or retry_delays(retry_initial, retry_max)
        if endpoint is None:
            endpoint = TCP4ClientEndpoint(reactor, address.host, address.port, timeout=timeout)
        for protocol, ready in (
            (txredisapi.RedisProtocol, self._commands_ready),
            (_Subscriber, self._events_ready),
        ):
            ClientService(
                endpoint,
                _Factory(protocol, address, timeout, self),
                retryPolicy=policy,
                clock=self.clock,
                prepareConnection=partial(_prepare, ready),
            ).setServiceParent(self)
        #: Called with the body of each control message other nodes (or
        #: this one) send (L{send_control}); the WAMP cluster's.
        self.control: Callable[[str], None] | None = None

    # status

    @property
    def backplane_status(self) -> str:
        return "ok" if self.connected else "degraded"

    # connections

    async def _commands_ready(self, command: Any) -> None:
        await command.whenConnected()
        command.whenDisconnected().addCallback(self._lost, command)
        self._command = command
        await self._join()

    async def _events_ready(self, subscriber: Any) -> None:
        await subscriber.whenConnected()
        self._buffer = []
        await subscriber.subscribe([self.events_channel, self._node_channel])
        subscriber.whenDisconnected().addCallback(self._lost, subscriber)
        self._subscriber = subscriber
        self._caught_up = False
        await self._join()

    async def _join(self) -> None:
        """
        Once both connections are up, count the node connected and catch
        up on what the events connection missed while it was down.
        """
        if self._command is None or self._subscriber is None or self.connected:
            return
        self.connected = True
        self.connects += 1
        self.log.info(
            "Backplane connected to Redis at {host}:{port}",
            host=self.address.host,
            port=self.address.port,
        )
        if not self._caught_up:
            subscriber = self._subscriber
            try:
                await self._catch_up()
            except Exception:
                self.log.failure("Backplane could not catch up; reconnecting")
                if subscriber.transport is not None:
                    subscriber.transport.loseConnection()
                return
            if self._subscriber is subscriber:
                self._caught_up = True

    def _overflowed(self) -> None:
        """
        Too much arrived while catching up: start the events connection
        over (its sessions recover, or are closed with L{CLOSE_BACKPLANE_GAP}).
        """
        self.log.warn("Backplane fell {count} messages behind; reconnecting", count=MAX_BUFFERED)
        subscriber = self._subscriber
        self._buffer = None
        self._subscriber = None
        self.connected = False
        if subscriber is not None and subscriber.transport is not None:
            subscriber.transport.abortConnection()

    def _lost(self, _: object, connection: Any) -> None:
        if connection is self._command:
            self._command = None
        elif connection is self._subscriber:
            self._subscriber = None
            buffered, self._buffer = self._buffer, None
            for message in buffered or ():
                self._handle(message)
            markers, self._markers = self._markers, {}
            for marker in markers.values():
                marker.errback(BackplaneUnavailable("Redis connection lost"))
        else:
            return
        if self.connected and self.running:
            self.log.warn("Backplane lost a Redis connection; reconnecting")
        self.connected = False

    # catching up after (re)connecting

    async def _catch_up(self) -> None:
        """
        Replay, from the Streams, what local subscribers missed while this
        node was not subscribed; close the sessions of channels whose
        history is gone. Live messages wait in the buffer meanwhile.
        """
        for channel in list(self._last):
            if not self.router.matching_subscriptions(channel):
                del self._last[channel]
                continue
            last = self._last[channel]
            recovery = await self._since(channel, last.seq, last.epoch, wait=False)
            if recovery.recovered:
                for event in recovery.events:
                    self._deliver(event, recovery.position.epoch)
                self.replayed += len(recovery.events)
            else:
                self._close_gap(channel)
                self._last[channel] = recovery.position
        buffered, self._buffer = self._buffer or [], None
        for message in buffered:
            self._handle(message)

    def _close_gap(self, channel: str) -> None:
        sessions = {s for sub in self.router.matching_subscriptions(channel) for s in sub.sessions}
        if sessions:
            self.log.warn(
                "Events on {channel} were lost from Redis; closing its {count} sessions",
                channel=channel,
                count=len(sessions),
            )
        for session in sessions:
            self.gap_closes += 1
            session.close(CLOSE_BACKPLANE_GAP, "events may have been missed; reconnect")

    # receiving

    def received(self, message: str) -> None:
        if self._buffer is not None:
            self._buffer.append(message)
            if len(self._buffer) > MAX_BUFFERED:
                self._overflowed()
        else:
            self._handle(message)

    def _handle(self, message: str) -> None:
        head, _, payload = message.partition(" ")
        if head == CONTROL:
            self._control(payload)
            return
        if not payload:
            marker = self._markers.pop(head, None)
            if marker is not None:
                marker.callback(None)
            return
        epoch, _, body = payload.partition(" ")
        try:
            event = event_of(body, int(head))
        except (ValueError, KeyError, TypeError):
            self.log.error(
                "Unreadable message on the backplane: {message!r}", message=message[:200]
            )
            return
        self._deliver(event, epoch)

    def _deliver(self, event: Event, epoch: str) -> None:
        channel = event.channel
        assert event.seq is not None
        last = self._last.get(channel)
        if last is not None and last.epoch == epoch and event.seq <= last.seq:
            return
        self._remember(channel, Position(event.seq, epoch))
        self.router.deliver(event)

    def _remember(self, channel: str, position: Position) -> None:
        self._last[channel] = position
        self._last.move_to_end(channel)
        if len(self._last) > MAX_TRACKED_CHANNELS:
            self._last.popitem(last=False)

    # control messages between nodes

    def send_control(self, body: str, node: str | None = None) -> Deferred[Any]:
        """
        Send C{body} to node C{node}'s own channel, or with C{None} to every
        node (this one too), in order with events.
        """
        command = self._command
        if not self.connected or command is None:
            return fail(BackplaneUnavailable("Redis cannot be reached"))
        channel = self.events_channel if node is None else f"{self.prefix}node:{node}"
        d: Deferred[Any] = command.publish(channel, f"{CONTROL} {body}")
        return d

    def _control(self, body: str) -> None:
        if self.control is not None:
            try:
                self.control(body)
            except Exception:
                self.log.failure("A control message failed: {body!r}", body=body[:200])

    # IBackplane

    def publish(
        self, channel: str, data: Any, extras: Extras | None = None
    ) -> Deferred[DeliveryReport]:
        """
        Number and store the event in Redis and send it to every node; the
        report's C{delivered} counts the nodes it went to.
        """
        try:
            encoded = encode_data(channel, data, binary=extras is not None)
        except InvalidEvent:
            return fail()
        command = self._command
        if not self.connected or command is None:
            self.publish_failures += 1
            return fail(
                BackplaneUnavailable("Redis cannot be reached; the event was not published")
            )
        publication = new_publication_id()
        body = envelope(
            channel, iso_timestamp(self._wallclock()), encoded, publication, extras
        ).decode("utf-8")
        d: Deferred[Any] = command.eval(
            _PUBLISH,
            [self._meta_key(channel), self._stream_key(channel)],
            [body, secrets.token_hex(6), self.history_size, self.ttl, self.events_channel],
        )
        return d.addCallbacks(
            lambda reply: DeliveryReport(int(reply[2]), 0, publication), self._publish_failed
        )

    def publish_many(self, channel: str, items: Sequence[Any]) -> Deferred[list[DeliveryReport]]:
        """
        Publish each of C{items} in order: the commands leave in one write
        (the connection buffers them until the reactor's next pass), and
        every node gets them in this order.
        """
        try:
            for data in items:
                encode_data(channel, data)
        except InvalidEvent:
            return fail()
        return gatherResults([self.publish(channel, data) for data in items], consumeErrors=True)

    def _publish_failed(self, failure: Failure) -> Failure:
        self.publish_failures += 1
        if failure.check(txredisapi.ConnectionError):
            raise BackplaneUnavailable(
                "Redis connection lost; the event may not have been published"
            )
        return failure

    def position(self, channel: str) -> Deferred[Position]:
        return self.since(channel, -1, UNKNOWN_EPOCH).addCallback(lambda r: r.position)

    def since(self, channel: str, seq: int, epoch: str) -> Deferred[Recovery]:
        """
        What came after C{seq}, read from the channel's Stream. It fires
        once this node has delivered every event up to the position it
        answers with, so a caller holding live events back can release the
        newer ones without gap or repeat. Without Redis it answers with what
        this node last delivered.
        """
        d = ensureDeferred(self._since(channel, seq, epoch))
        return d.addErrback(lambda _: self._local_recovery(channel, seq, epoch))

    async def _since(self, channel: str, seq: int, epoch: str, wait: bool = True) -> Recovery:
        """
        With C{wait}, the script also sends this node a marker, and the
        answer waits for it: pub/sub keeps order, so once it arrives every
        event numbered before the script ran has been delivered here.
        """
        command = self._command
        if not self.connected or command is None:
            return self._local_recovery(channel, seq, epoch)
        token = secrets.token_hex(8)
        marker: Deferred[None] = Deferred()
        if wait:
            self._markers[token] = marker
        reply = await command.eval(
            _SINCE,
            [self._meta_key(channel), self._stream_key(channel)],
            [secrets.token_hex(6), "" if seq < 0 else str(seq), self._node_channel, token],
        )
        if wait:
            await marker
        current = Position(int(reply[1]), reply[0])
        known = self._last.get(channel)
        if known is None or known.epoch != current.epoch:
            self._remember(channel, current)
        if seq < 0:
            return Recovery([], False, current)
        events = [self._entry_event(channel, entry) for entry in reply[2]]
        complete = epoch == current.epoch and 0 <= seq <= current.seq
        complete = complete and (seq == current.seq or (bool(events) and events[0].seq == seq + 1))
        if epoch != current.epoch or seq > current.seq:
            events = []
        return Recovery(events, complete, current)

    def _local_recovery(self, channel: str, seq: int, epoch: str) -> Recovery:
        position = self._last.get(channel)
        if position is None:
            position = Position(0, UNKNOWN_EPOCH)
            self._remember(channel, position)
        recovered = epoch == position.epoch != UNKNOWN_EPOCH and seq == position.seq
        return Recovery([], recovered, position)

    @staticmethod
    def _entry_event(channel: str, entry: list[Any]) -> Event:
        entry_id, fields = entry
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        return event_of(values["p"], int(entry_id.partition("-")[2]))

    def _meta_key(self, channel: str) -> str:
        return f"{self.prefix}ch:{{{channel}}}"

    def _stream_key(self, channel: str) -> str:
        return f"{self.prefix}st:{{{channel}}}"
