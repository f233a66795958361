"""
The ping sweep: one timer for all connections, dropping the silent ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import CooperativeTask, Cooperator, LoopingCall, TaskDone
from twisted.logger import Logger

from cluso_router._reactor import default_reactor
from cluso_router.interfaces import ISession
from cluso_router.router.router import Router

DEFAULT_PING_INTERVAL: Final = 30.0
#: Longest stretch one sweep keeps the reactor busy before yielding.
SWEEP_SLICE_SECONDS: Final = 0.003
#: Sessions pinged in one slice at most. A ping to a loopback peer costs
#: some 30 microseconds of wall time (the kernel hands it to the reader
#: then and there), and each brings back a pong to read: 100 keep a slice,
#: and the reads its pongs cause, to a few milliseconds each.
SWEEP_SLICE_SESSIONS: Final = 100
#: Least pause between slices; after a longer slice, the pause is as long
#: as the slice, so a sweep takes at most half of the reactor's time. The
#: pongs of a slice come in during the pause and are read in turns of their
#: own, not with the next slice's pings.
SWEEP_SLICE_GAP_SECONDS: Final = 0.002


class _SliceBudget:
    """
    A L{Cooperator} termination predicate: true once C{seconds} have passed
    or C{steps} sessions were visited.
    """

    def __init__(self, seconds: float, steps: int, timer: Callable[[], float]) -> None:
        self._deadline = timer() + seconds
        self._steps = steps
        self._timer = timer

    def __call__(self) -> bool:
        self._steps -= 1
        return self._steps <= 0 or self._timer() >= self._deadline


class PingSweeper(Service):
    """
    Every C{interval} seconds, abort sessions not heard from since the last
    sweep (no pong and no message) and ping the rest.

    Aborting rather than closing matters: a peer that stopped answering will
    not complete a closing handshake either. A sweep over many sessions runs
    in slices of at most L{SWEEP_SLICE_SECONDS} and L{SWEEP_SLICE_SESSIONS},
    each followed by a pause at least as long (L{SWEEP_SLICE_GAP_SECONDS} at
    least), so neither the pinging nor the answers it brings hold up other
    work on the reactor for long.
    """

    log = Logger()
    name = "ping-sweeper"

    def __init__(
        self,
        router: Router,
        interval: float = DEFAULT_PING_INTERVAL,
        clock: IReactorTime | None = None,
        timer: Callable[[], float] = time.perf_counter,
        slice_seconds: float = SWEEP_SLICE_SECONDS,
        slice_sessions: int = SWEEP_SLICE_SESSIONS,
        slice_gap: float = SWEEP_SLICE_GAP_SECONDS,
    ) -> None:
        if interval <= 0:
            raise ValueError("ping interval must be positive")
        self.router = router
        self.interval = interval
        self.clock: IReactorTime = clock if clock is not None else default_reactor()
        self.sweeps = 0
        self.dropped = 0
        self.last_sweep_seconds = 0.0
        self.longest_slice_seconds = 0.0
        self.slices = 0
        self._timer = timer
        self.slice_gap = slice_gap
        self._cooperator = Cooperator(
            terminationPredicateFactory=lambda: _SliceBudget(slice_seconds, slice_sessions, timer),
            scheduler=self._schedule,
        )
        self._slice_started: float | None = None
        self._loop: LoopingCall | None = None
        self._task: CooperativeTask | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TaskDone):
                task.stop()
        return None

    def sweep(self) -> Deferred[Any]:
        """
        Run one sweep over the sessions connected now.

        @return: a L{Deferred} that fires when the sweep is done.
        """
        started = self._timer()
        sessions = list(self.router.sessions())
        task = self._task = self._cooperator.cooperate(self._visit(sessions))

        def finished(result: object) -> object:
            self.sweeps += 1
            self.last_sweep_seconds = self._timer() - started
            return result

        return task.whenDone().addCallback(finished)

    def _schedule(self, work: Callable[[], None]) -> Any:
        """
        Run the next slice after a pause as long as the slice that asks for
        it took (L{SWEEP_SLICE_GAP_SECONDS} at least).
        """
        pause = self.slice_gap
        if self._slice_started is not None:
            pause = max(pause, self._timer() - self._slice_started)
        return self.clock.callLater(pause, self._timed, work)

    def _timed(self, work: Callable[[], None]) -> None:
        started = self._slice_started = self._timer()
        try:
            work()
        finally:
            self._slice_started = None
        self.slices += 1
        self.longest_slice_seconds = max(self.longest_slice_seconds, self._timer() - started)

    def _visit(self, sessions: list[ISession]) -> Iterator[None]:
        for session in sessions:
            if self.router.session(session.connection_id) is not session:
                continue
            if session.heard:
                session.heard = False
                session.ping()
            else:
                self._drop(session)
            yield None

    def _drop(self, session: ISession) -> None:
        self.log.info(
            "Dropping {connection_id}: no pong or message since the last sweep",
            connection_id=session.connection_id,
        )
        self.dropped += 1
        try:
            session.abort()
        finally:
            self.router.unregister_session(session)
