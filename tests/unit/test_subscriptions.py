"""
Subscription indexes and the history store, as units.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cluso_router.router.history import MemoryHistory
from cluso_router.router.router import Router
from cluso_router.router.subscriptions import PrefixIndex, Subscription, WildcardIndex
from cluso_router.testing import FakeSession


def patterns(index: PrefixIndex | WildcardIndex, channel: str) -> set[str]:
    return {s.pattern for s in index.matching(channel)}


def test_prefix_index_matches_string_prefixes() -> None:
    """
    A prefix pattern matches every channel starting with it, itself included.
    """
    index = PrefixIndex()
    for pattern in ("build.", "build.web", "b", "deploy"):
        index.add(Subscription(pattern, "prefix"))
    assert patterns(index, "build.web.done") == {"build.", "build.web", "b"}
    assert patterns(index, "build") == {"b"}
    assert patterns(index, "deploy") == {"deploy"}
    assert patterns(index, "x") == set()
    index.remove(index.get("b"))  # type: ignore[arg-type]
    assert patterns(index, "build.web") == {"build.", "build.web"}
    assert len(index) == 3


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("build..done", "build.web.done", True),
        ("build..done", "build.web.x.done", False),
        ("build..done", "build.done", False),
        (".status", "git.status", True),
        ("a.b.c", "a.b.c", True),
        ("a..", "a.b.c", True),
        ("a..", "a.b", False),
    ],
)
def test_wildcard_index_follows_wamp_semantics(pattern: str, channel: str, matches: bool) -> None:
    """
    An empty component matches exactly one component of any value; the
    number of components must agree.
    """
    index = WildcardIndex()
    index.add(Subscription(pattern, "wildcard"))
    assert (patterns(index, channel) == {pattern}) is matches


def test_wildcard_index_prunes_empty_branches() -> None:
    """
    Removing the last pattern under a branch removes the branch too.
    """
    index = WildcardIndex()
    one, two = Subscription("a..c", "wildcard"), Subscription("a.b.c", "wildcard")
    index.add(one)
    index.add(two)
    assert patterns(index, "a.b.c") == {"a..c", "a.b.c"}
    index.remove(one)
    index.remove(two)
    assert len(index) == 0
    assert index._root.children == {}


def test_overlapping_subscriptions_deliver_once() -> None:
    """
    A session whose exact, prefix and wildcard subscriptions all match an
    event gets it once; unsubscribing names the same channel and match.
    """
    router = Router(clock=Clock())
    session, other = FakeSession(), FakeSession()
    router.register_session(session)
    router.register_session(other)
    router.subscribe(session, "build.web.done")
    router.subscribe(session, "build.", "prefix")
    router.subscribe(session, "build..done", "wildcard")
    router.subscribe(other, "build..done", "wildcard")

    assert router.publish("build.web.done", 1).delivered == 2
    assert len(session.frames) == 1
    assert router.publish("build.api.done", 2).delivered == 2
    assert router.publish("build.log", 3).delivered == 1

    assert router.unsubscribe(session, "build.", "prefix")
    assert not router.unsubscribe(session, "build.", "wildcard")
    assert router.publish("build.log", 4).delivered == 0
    router.unregister_session(session)
    assert router.pattern_counts() == {"prefix": {}, "wildcard": {"build..done": 1}}
    assert router.subscriber_counts() == {}


def test_history_numbers_events_and_recovers_what_was_missed() -> None:
    """
    Sequence numbers rise by one per channel; asking since a known position
    returns exactly the later events and says they are complete.
    """
    history = MemoryHistory(Clock(), size=10)
    events = [history.record("c", n, "t") for n in range(5)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert history.record("other", 0, "t").seq == 1
    epoch = history.position("c").epoch
    recovery = history.since("c", 2, epoch)
    assert [e.data for e in recovery.events] == [2, 3, 4]
    assert recovery.recovered
    assert history.since("c", 5, epoch).recovered


def test_history_says_when_it_cannot_recover() -> None:
    """
    A different epoch, a position in the future, and a position whose next
    event was already dropped (by count or by age) all give recovered=False.
    """
    clock = Clock()
    history = MemoryHistory(clock, size=3, seconds=60)
    for n in range(5):
        history.record("c", n, "t")
    epoch = history.position("c").epoch
    assert not history.since("c", 0, "another-epoch").recovered
    assert not history.since("c", 9, epoch).recovered
    partial = history.since("c", 0, epoch)
    assert not partial.recovered
    assert [e.seq for e in partial.events] == [3, 4, 5]
    assert history.since("c", 2, epoch).recovered
    clock.advance(61)
    assert not history.since("c", 4, epoch).recovered
    assert history.since("c", 5, epoch).recovered


def test_history_forgets_least_recently_used_channels_past_the_bound() -> None:
    """
    Past the channel bound the least recently published channel is
    forgotten, and its epoch changes so clients learn history was lost.
    """
    history = MemoryHistory(Clock(), max_channels=2)
    history.record("a", 1, "t")
    old_epoch = history.position("a").epoch
    history.record("b", 1, "t")
    history.record("c", 1, "t")
    assert history.position("a").epoch != old_epoch
    assert history.position("a").seq == 0
