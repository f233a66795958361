"""
Per-channel sequence numbers and a bounded history, so a client that was
away can ask for what it missed.

Each channel has an C{epoch}: a random id that changes whenever its history
is lost (with this in-memory store: on restart, or when the channel was
evicted). A client names the epoch it knows; if it differs, the server
cannot tell what was missed and says so (C{recovered: false}).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime

from cluso_router.router.event import Event, Extras

DEFAULT_HISTORY_SIZE: Final = 1000
DEFAULT_HISTORY_SECONDS: Final = 300.0
DEFAULT_MAX_CHANNELS: Final = 10_000


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


class _Channel:
    __slots__ = ("epoch", "events", "seq")

    def __init__(self, size: int) -> None:
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        self.events: deque[tuple[float, Event]] = deque(maxlen=size)


class MemoryHistory:
    """
    Keeps the last C{size} events of each channel, none older than
    C{seconds}, for at most C{max_channels} channels (the least recently
    published one is forgotten first).
    """

    def __init__(
        self,
        clock: IReactorTime,
        size: int = DEFAULT_HISTORY_SIZE,
        seconds: float = DEFAULT_HISTORY_SECONDS,
        max_channels: int = DEFAULT_MAX_CHANNELS,
    ) -> None:
        if size < 0 or seconds < 0:
            raise ValueError("history size and age must not be negative")
        self._clock = clock
        self.size = size
        self.seconds = seconds
        self._max_channels = max_channels
        self._channels: OrderedDict[str, _Channel] = OrderedDict()

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(self.size)
            while len(self._channels) > self._max_channels:
                self._channels.popitem(last=False)
        return channel

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
        Give the next C{seq} of C{channel_name} to a new event and keep it.
        """
        channel = self._channel(channel_name)
        self._channels.move_to_end(channel_name)
        channel.seq += 1
        event = Event(channel_name, data, timestamp, channel.seq, encoded, publication, extras)
        if self.size:
            now = self._clock.seconds()
            channel.events.append((now, event))
            self._expire(channel, now)
        return event

    def position(self, channel_name: str) -> Position:
        channel = self._channel(channel_name)
        return Position(channel.seq, channel.epoch)

    def since(self, channel_name: str, seq: int, epoch: str) -> Recovery:
        """
        The kept events of C{channel_name} after C{seq}, in order.

        C{recovered} is true only when they are exactly the events missed:
        same epoch, C{seq} not in the future, and nothing after C{seq}
        already dropped from the history.
        """
        channel = self._channel(channel_name)
        position = Position(channel.seq, channel.epoch)
        if epoch != channel.epoch or seq > channel.seq or seq < 0:
            return Recovery([], False, position)
        self._expire(channel, self._clock.seconds())
        missed = [event for _, event in channel.events if event.seq > seq]  # type: ignore[operator]
        oldest_needed = seq + 1
        complete = seq == channel.seq or (bool(missed) and missed[0].seq == oldest_needed)
        return Recovery(missed, complete, position)

    def kept(self, matching: Callable[[str], bool]) -> list[Event]:
        """
        The kept events of every channel whose name C{matching} accepts,
        oldest first (by when they were kept).
        """
        now = self._clock.seconds()
        found: list[tuple[float, Event]] = []
        for name, channel in self._channels.items():
            if matching(name):
                self._expire(channel, now)
                found.extend(channel.events)
        found.sort(key=lambda kept: kept[0])
        return [event for _, event in found]

    def _expire(self, channel: _Channel, now: float) -> None:
        horizon = now - self.seconds
        events = channel.events
        while events and events[0][0] < horizon:
            events.popleft()
