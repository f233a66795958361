"""
How late the reactor runs its timers: the one number that says whether a
burst, a broadcast to thousands or a sweep holds up everything else.
"""

from __future__ import annotations

from typing import Final

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

from cluso_router._reactor import default_reactor

#: Seconds between the probe's ticks.
DEFAULT_PROBE_INTERVAL: Final = 0.05


class ReactorLagProbe(TimerService):
    """
    A timer that measures its own lateness: each tick compares
    when it ran with when it was due. A stall of the reactor (a long
    callback, a full garbage collection) shows as one late tick.

    @ivar last: the lateness of the last tick, in seconds.
    @ivar worst: the worst lateness since the service started.
    """

    name = "reactor-lag"

    def __init__(
        self, clock: IReactorTime | None = None, interval: float = DEFAULT_PROBE_INTERVAL
    ) -> None:
        super().__init__(interval, self._tick)
        self.clock: IReactorTime = clock if clock is not None else default_reactor()
        self.interval = interval
        self.last = 0.0
        self.worst = 0.0
        self._window_worst = 0.0
        self._due = 0.0

    def startService(self) -> None:
        self._due = self.clock.seconds()
        super().startService()

    def _tick(self) -> None:
        now = self.clock.seconds()
        late = max(0.0, now - self._due)
        # LoopingCall skips the ticks a stall swallowed; the next is due on
        # the interval's grid after now.
        self._due += self.interval * (1 + int(late / self.interval))
        self.last = late
        self.worst = max(self.worst, late)
        self._window_worst = max(self._window_worst, late)

    def take_window(self) -> float:
        """
        The worst lateness since the previous call (or the start), and
        start a new window.
        """
        worst, self._window_worst = self._window_worst, 0.0
        return worst
