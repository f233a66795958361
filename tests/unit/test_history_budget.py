"""
The history's budgets: bytes in all, bytes per event, age (freed by a
timer), and channels; and asking about a channel never creates it.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from cluso_router.router.history import EVENT_OVERHEAD, MemoryHistory
from cluso_router.router.router import HISTORY_EXPIRY_INTERVAL, Router


def blob(n: int) -> str:
    return "x" * n


def test_the_byte_budget_drops_the_least_recently_published_channels_oldest_first() -> None:
    """
    Past C{max_bytes}, the oldest events of the least recently published
    channel go first; the total never exceeds the budget, and what is
    dropped is counted.
    """
    budget = 10 * (1000 + EVENT_OVERHEAD)
    history = MemoryHistory(Clock(), max_bytes=budget, max_event_bytes=5000)
    for _ in range(6):
        history.record("old", blob(998), "t")
    for _ in range(8):
        history.record("new", blob(998), "t")
    assert history.kept_bytes <= budget
    old = history.since("old", 0, history.position("old").epoch)
    new = history.since("new", 0, history.position("new").epoch)
    assert [e.seq for e in old.events] == [5, 6]
    assert not old.recovered
    assert len(new.events) == 8
    assert new.recovered
    assert history.evicted_bytes == 4 * (1000 + EVENT_OVERHEAD)


def test_an_event_above_the_per_event_limit_is_numbered_but_not_kept() -> None:
    """
    A big event takes its seq and is delivered, but is not kept; recovery
    across it says recovered=False, while recovery after it works.
    """
    history = MemoryHistory(Clock(), max_event_bytes=100)
    history.record("c", "small", "t")
    big = history.record("c", blob(500), "t")
    history.record("c", "after", "t")
    assert big.seq == 2
    assert big.encoded is not None
    assert history.unkept == 1
    epoch = history.position("c").epoch
    across = history.since("c", 0, epoch)
    assert [e.data for e in across.events] == ["small", "after"]
    assert not across.recovered
    assert history.since("c", 2, epoch).recovered


def test_expired_events_of_idle_channels_are_freed_by_the_routers_timer() -> None:
    """
    Events older than the history's age are freed by the router's periodic
    expiry even when nothing is published on their channel any more.
    """
    clock = Clock()
    router = Router(clock=clock, history=MemoryHistory(clock, seconds=60))
    router.startService()
    for n in range(100):
        router.publish("idle", {"n": n, "pad": blob(100)})
    assert router.history.kept_bytes > 100 * 100
    clock.advance(60 + HISTORY_EXPIRY_INTERVAL + 1)
    assert router.history.kept_bytes == 0
    assert router.history.kept_events == 0
    assert router.position("idle").seq == 100
    router.stopService()


def test_asking_about_channels_never_creates_them() -> None:
    """
    Positions and recoveries of ten thousand and one unknown channels leave
    the history empty: another channel keeps its events and epoch.
    """
    history = MemoryHistory(Clock(), max_channels=10_000)
    history.record("real", 1, "t")
    epoch = history.position("real").epoch
    for n in range(10_001):
        history.position(f"ghost-{n}")
        history.since(f"ghost-{n}", 0, "whatever")
    assert history.channel_count == 1
    recovery = history.since("real", 0, epoch)
    assert recovery.recovered
    assert [e.data for e in recovery.events] == [1]


def test_a_subscriber_that_came_first_recovers_from_the_first_event() -> None:
    """
    The position of a channel nobody published on yet has the epoch its
    first events will have, so a client subscribed before them recovers.
    """
    history = MemoryHistory(Clock())
    before = history.position("later")
    assert before.seq == 0
    history.record("later", "first", "t")
    recovery = history.since("later", 0, before.epoch)
    assert recovery.recovered
    assert [e.data for e in recovery.events] == ["first"]


def test_a_forgotten_channel_comes_back_with_a_new_stable_epoch() -> None:
    """
    Past the channel bound the least recently published channel is
    forgotten; until it is published on again its position keeps one new
    epoch, which its next events carry, so its old clients learn that
    history was lost.
    """
    history = MemoryHistory(Clock(), max_channels=1)
    history.record("a", 1, "t")
    old = history.position("a").epoch
    history.record("b", 1, "t")
    forgotten = history.position("a")
    assert forgotten.epoch != old
    assert history.position("a") == forgotten
    history.record("a", 2, "t")
    assert history.position("a").epoch == forgotten.epoch
    assert not history.since("a", 1, old).recovered
