"""
The ping sweep: liveness from pongs and messages, dropping silent peers,
and sweeping many sessions without holding the reactor.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cluso_router.router.liveness import PingSweeper
from cluso_router.router.router import Router
from cluso_router.testing import FakeSession


def run_sweep(clock: Clock, sweeper: PingSweeper) -> None:
    done: list[object] = []
    sweeper.sweep().addCallback(done.append)
    while not done:
        clock.advance(sweeper.slice_gap)


def test_heard_sessions_are_pinged_and_silent_ones_aborted() -> None:
    """
    A session heard from since the last sweep gets a ping and must be heard
    from again; one not heard from is aborted and unregistered.
    """
    clock = Clock()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock)
    lively, silent = FakeSession(), FakeSession()
    router.register_session(lively)
    router.register_session(silent)

    run_sweep(clock, sweeper)
    assert (lively.pings, silent.pings) == (1, 1)
    assert not lively.heard
    assert not silent.heard

    lively.heard = True
    run_sweep(clock, sweeper)
    assert lively.pings == 2
    assert silent.aborted
    assert router.session(silent.connection_id) is None
    assert router.session(lively.connection_id) is lively
    assert sweeper.dropped == 1


def test_sweeps_run_on_the_injected_clock_every_interval() -> None:
    """
    Started as a service, the sweeper sweeps once per interval on its clock.
    """
    clock = Clock()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock)
    session = FakeSession()
    router.register_session(session)
    sweeper.startService()
    clock.advance(29)
    assert session.pings == 0
    clock.advance(1)
    clock.advance(sweeper.slice_gap)
    assert session.pings == 1
    session.heard = True
    clock.advance(30)
    clock.advance(sweeper.slice_gap)
    assert session.pings == 2
    sweeper.stopService()
    clock.advance(300)
    assert session.pings == 2


class FakeTimer:
    """
    A monotonic timer that only moves when told to.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostlyPingSession(FakeSession):
    """
    A session whose ping costs C{cost} seconds of the fake timer (5
    microseconds is about what framing and writing a real one costs; to a
    loopback peer on a busy machine it can be ten times that).
    """

    def __init__(self, timer: FakeTimer, cost: float = 5e-6) -> None:
        super().__init__()
        self._timer = timer
        self._cost = cost

    def ping(self) -> None:
        self._timer.now += self._cost
        super().ping()


def test_sweep_of_10000_slow_pings_yields_in_short_slices() -> None:
    """
    Sweeping 10,000 sessions whose pings cost 50 microseconds each (500 ms
    of pinging) is split into reactor turns of at most the 3 ms slice (plus
    one ping), fewer than 100 sessions each.
    """
    clock = Clock()
    timer = FakeTimer()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock, timer=timer)
    for _ in range(10_000):
        router.register_session(CostlyPingSession(timer, cost=50e-6))
    run_sweep(clock, sweeper)
    assert sum(s.pings for s in router.sessions()) == 10_000  # type: ignore[attr-defined]
    assert sweeper.longest_slice_seconds <= 0.003 + 50e-6 + 1e-9
    assert sweeper.slices >= 10_000 / 61
    assert sweeper.last_sweep_seconds == pytest.approx(0.5)


def test_a_slice_pings_at_most_100_sessions() -> None:
    """
    Cheap pings still leave the reactor every 100 sessions, so the pongs
    they bring back arrive 100 at a time: 10,000 sessions take 100 slices
    (and one more that finds the sweep done).
    """
    clock = Clock()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock, timer=FakeTimer())
    for _ in range(10_000):
        router.register_session(FakeSession())
    run_sweep(clock, sweeper)
    assert sum(s.pings for s in router.sessions()) == 10_000  # type: ignore[attr-defined]
    assert sweeper.slices == 101


def test_slices_are_spaced_so_the_pongs_of_one_are_read_before_the_next() -> None:
    """
    Consecutive slices are at least the slice gap apart on the reactor's
    clock: a slice's pongs come in while the reactor waits, so they are not
    read in the same turn as the next slice's pings.
    """
    clock = Clock()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock, timer=FakeTimer(), slice_gap=0.002)
    sessions = [FakeSession() for _ in range(1_000)]
    for session in sessions:
        router.register_session(session)
    sweeper.sweep()
    pinged = []
    for _ in range(5):
        clock.advance(0.001)
        pinged.append(sum(s.pings for s in sessions))
        clock.advance(0.001)
        pinged.append(sum(s.pings for s in sessions))
    assert pinged == [0, 100, 100, 200, 200, 300, 300, 400, 400, 500]


def test_after_a_long_slice_the_pause_is_as_long() -> None:
    """
    When pinging is slow (a slice of 100 pings at 25 microseconds each took
    2.5 ms), the next slice waits as long as the last one took, so a sweep
    holds the reactor at most half the time.
    """
    clock = Clock()
    timer = FakeTimer()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock, timer=timer, slice_gap=0.002)

    class SlowPingSession(FakeSession):
        def ping(self) -> None:
            timer.now += 25e-6
            super().ping()

    sessions = [SlowPingSession() for _ in range(300)]
    for session in sessions:
        router.register_session(session)
    sweeper.sweep()
    clock.advance(0.002)
    assert sum(s.pings for s in sessions) == 100
    clock.advance(0.002)
    assert sum(s.pings for s in sessions) == 100
    clock.advance(0.001)
    assert sum(s.pings for s in sessions) == 200


def test_stopping_the_sweeper_stops_a_sweep_in_progress() -> None:
    """
    A sweep still going when the service stops pings no one after the stop.
    """
    clock = Clock()
    timer = FakeTimer()
    router = Router(clock=clock)
    sweeper = PingSweeper(router, interval=30, clock=clock, timer=timer)

    class StoppingSession(CostlyPingSession):
        def ping(self) -> None:
            super().ping()
            sweeper.stopService()

    sessions = [CostlyPingSession(timer) for _ in range(5_000)]
    sessions.insert(2_000, StoppingSession(timer))
    for session in sessions:
        router.register_session(session)
    sweeper.startService()
    clock.advance(30)
    for _ in range(100):
        clock.advance(sweeper.slice_gap)
    clock.advance(60)
    assert sum(s.pings for s in sessions) == 2_001
