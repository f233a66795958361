"""
Per-channel sequence numbers and a bounded history, so a client that was
away can ask for what it missed.

Each channel has an C{epoch}: an id that changes whenever its history is
lost (with this in-memory store: on restart, or when the channel was
evicted). A client names the epoch it knows; if it differs, the server
cannot tell what was missed and says so (C{recovered: false}).

The history has budgets in events per channel, age, channels and, above
all, bytes: the JSON of every kept event counts; when the total is over
budget the oldest events of the least recently published channel go first;
an event bigger than the per-event limit is delivered but not kept; and
expired events are freed by a timer (L{MemoryHistory.expire}), not only
when their channel is next used. Asking about a channel never creates it:
only a publish does.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime

from cluso_router._json import dumps, loads
from cluso_router.router.event import Event, Extras

DEFAULT_HISTORY_SIZE: Final = 1000
DEFAULT_HISTORY_SECONDS: Final = 300.0
DEFAULT_MAX_CHANNELS: Final = 10_000
DEFAULT_HISTORY_BYTES: Final = 64 * 1024 * 1024
DEFAULT_HISTORY_EVENT_BYTES: Final = 256 * 1024
#: What one kept event costs beyond its JSON (its record and queue slots).
EVENT_OVERHEAD: Final = 120


@dataclass(frozen=True, slots=True)
class Position:
    """
    Where a channel is: the last C{seq} given out and the current C{epoch}.
    """

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """
    The events after a position, and whether they are all that was missed.
    """

    events: list[Event]
    recovered: bool
    position: Position


class _Kept:
    """
    One kept event: its JSON, not the decoded value (half the memory of
    keeping both; replays decode it again), and what a WAMP publisher gave
    beyond it.
    """

    __slots__ = ("at", "encoded", "extras", "publication", "seq", "size", "timestamp")

    def __init__(
        self,
        at: float,
        seq: int,
        timestamp: str,
        encoded: bytes,
        publication: int = 0,
        extras: Extras | None = None,
    ) -> None:
        self.at = at
        self.seq = seq
        self.timestamp = timestamp
        self.encoded = encoded
        self.publication = publication
        self.extras = extras
        self.size = len(encoded) + EVENT_OVERHEAD + _extras_size(extras, len(encoded))

    def event(self, channel: str) -> Event:
        return Event(
            channel,
            loads(self.encoded),
            self.timestamp,
            self.seq,
            self.encoded,
            self.publication,
            self.extras,
        )


def _extras_size(extras: Extras | None, encoded: int) -> int:
    """
    What a WAMP publication's extras cost beside its JSON: its arguments
    are about the size of that JSON (the data is made from them), a
    transparent payload its own length.
    """
    if extras is None:
        return 0
    size = EVENT_OVERHEAD
    if extras.args is not None or extras.kwargs is not None:
        size += encoded
    if extras.payload is not None:
        size += len(extras.payload)
    return size


class _Channel:
    __slots__ = ("epoch", "events", "name", "seq")

    def __init__(self, name: str, epoch: str) -> None:
        self.name = name
        self.epoch = epoch
        self.seq = 0
        self.events: deque[_Kept] = deque()


class MemoryHistory:
    """
    Keeps, for at most C{max_channels} channels (the least recently
    published one is forgotten first), the last C{size} events of each,
    none older than C{seconds}, and at most C{max_bytes} in all (the least
    recently published channel's oldest events go first); events above
    C{max_event_bytes} are numbered and delivered but not kept.

    @ivar kept_bytes: what the kept events cost now, in bytes.
    @ivar evicted_bytes: bytes of events dropped to stay within C{max_bytes}.
    @ivar unkept: events too big to keep.
    """

    def __init__(
        self,
        clock: IReactorTime,
        size: int = DEFAULT_HISTORY_SIZE,
        seconds: float = DEFAULT_HISTORY_SECONDS,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_bytes: int = DEFAULT_HISTORY_BYTES,
        max_event_bytes: int = DEFAULT_HISTORY_EVENT_BYTES,
    ) -> None:
        if size < 0 or seconds < 0 or max_bytes < 0 or max_event_bytes < 0:
            raise ValueError("history size, age and byte budgets must not be negative")
        if max_channels < 1:
            raise ValueError("the history must be allowed at least one channel")
        self._clock = clock
        self.size = size
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.max_event_bytes = max_event_bytes
        self._max_channels = max_channels
        #: Every channel, least recently published first.
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        #: The channels that keep events, least recently published first.
        self._holding: OrderedDict[str, _Channel] = OrderedDict()
        #: Channels forgotten lately, with the new epoch they get if
        #: published on again (their old events are gone).
        self._forgotten: OrderedDict[str, str] = OrderedDict()
        #: The epoch of channels never published on since this start.
        self._fresh_epoch = secrets.token_hex(6)
        self.kept_bytes = 0
        self.evicted_bytes = 0
        self.unkept = 0

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def kept_events(self) -> int:
        return sum(len(channel.events) for channel in self._holding.values())

    def record(
        self,
        channel_name: str,
        data: Any,
        timestamp: str,
        encoded: bytes | None = None,
        publication: int = 0,
        extras: Extras | None = None,
    ) -> Event:
        """
        Give the next C{seq} of C{channel_name} to a new event and keep it
        within the budgets. C{encoded} is the data's strict JSON when the
        caller made it already (L{cluso_router.router.event.encode_data}).
        """
        if encoded is None:
            encoded = dumps(data)
        channel = self._channels.get(channel_name)
        if channel is None:
            channel = self._create(channel_name)
        else:
            self._channels.move_to_end(channel_name)
        channel.seq += 1
        event = Event(channel_name, data, timestamp, channel.seq, encoded, publication, extras)
        if self.size:
            now = self._clock.seconds()
            self._expire_channel(channel, now - self.seconds)
            kept = _Kept(now, channel.seq, timestamp, encoded, publication, extras)
            if len(encoded) > self.max_event_bytes or kept.size > self.max_bytes:
                self.unkept += 1
            else:
                channel.events.append(kept)
                self._holding[channel_name] = channel
                self._holding.move_to_end(channel_name)
                self.kept_bytes += kept.size
                if len(channel.events) > self.size:
                    self._pop(channel)
                while self.kept_bytes > self.max_bytes:
                    self.evicted_bytes += self._pop(next(iter(self._holding.values())))
        return event

    def position(self, channel_name: str) -> Position:
        channel = self._channels.get(channel_name)
        if channel is None:
            return Position(0, self._epoch_for(channel_name))
        return Position(channel.seq, channel.epoch)

    def since(self, channel_name: str, seq: int, epoch: str) -> Recovery:
        """
        The kept events of C{channel_name} after C{seq}, in order.

        C{recovered} is true only when they are exactly the events missed:
        same epoch, C{seq} not in the future, and none of the events after
        C{seq} gone from the history (aged out, evicted or too big).
        """
        position = self.position(channel_name)
        if epoch != position.epoch or seq > position.seq or seq < 0:
            return Recovery([], False, position)
        channel = self._channels.get(channel_name)
        if channel is None:
            return Recovery([], True, position)
        self._expire_channel(channel, self._clock.seconds() - self.seconds)
        missed = [kept.event(channel_name) for kept in channel.events if kept.seq > seq]
        complete = len(missed) == position.seq - seq
        return Recovery(missed, complete, position)

    def kept(self, matching: Callable[[str], bool]) -> list[Event]:
        """
        The kept events of every channel whose name C{matching} accepts,
        oldest first (by when they were kept).
        """
        horizon = self._clock.seconds() - self.seconds
        found: list[tuple[float, Event]] = []
        for name, channel in list(self._holding.items()):
            if matching(name):
                self._expire_channel(channel, horizon)
                found.extend((kept.at, kept.event(name)) for kept in channel.events)
        found.sort(key=lambda pair: pair[0])
        return [event for _, event in found]

    def expire(self) -> int:
        """
        Free every event older than C{seconds} in every channel; the router
        calls this on a timer, so idle channels are freed too.

        @return: how many events were freed.
        """
        horizon = self._clock.seconds() - self.seconds
        return sum(
            self._expire_channel(channel, horizon) for channel in list(self._holding.values())
        )

    def _expire_channel(self, channel: _Channel, horizon: float) -> int:
        freed = 0
        events = channel.events
        while events and events[0].at < horizon:
            self._pop(channel)
            freed += 1
        return freed

    def _pop(self, channel: _Channel) -> int:
        """
        Drop C{channel}'s oldest kept event; return its size.
        """
        kept = channel.events.popleft()
        self.kept_bytes -= kept.size
        if not channel.events:
            self._holding.pop(channel.name, None)
        return kept.size

    def _create(self, name: str) -> _Channel:
        channel = self._channels[name] = _Channel(name, self._epoch_for(name))
        self._forgotten.pop(name, None)
        while len(self._channels) > self._max_channels:
            _, forgotten = self._channels.popitem(last=False)
            self._forget(forgotten)
        return channel

    def _epoch_for(self, name: str) -> str:
        """
        The epoch of a channel not kept now: the shared epoch of channels
        never published on (so a subscriber that came first recovers from
        seq 0 once the first event arrives), or a new one for a channel
        whose history was lost.
        """
        return self._forgotten.get(name, self._fresh_epoch)

    def _forget(self, channel: _Channel) -> None:
        while channel.events:
            self._pop(channel)
        self._forgotten[channel.name] = secrets.token_hex(6)
        while len(self._forgotten) > self._max_channels:
            self._forgotten.popitem(last=False)
