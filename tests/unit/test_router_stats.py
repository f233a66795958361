"""
The reactor lag probe and the C{router.stats} channel, on a fake clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cluso_router.router.lag import ReactorLagProbe
from cluso_router.router.router import Router
from cluso_router.router.statsfeed import MAX_LISTED_CHANNELS, ROUTER_STATS, RouterStatsFeed
from cluso_router.testing import FakeSession, decode_text_frame


def test_the_probe_measures_how_late_its_timer_ran() -> None:
    """
    On time, the probe reads 0; when the reactor was busy for 130 ms past
    a tick, that tick reads 130 ms late, the worst and the window's worst
    say so, and a new window starts from 0.
    """
    clock = Clock()
    probe = ReactorLagProbe(clock, interval=0.05)
    probe.startService()
    clock.pump([0.05] * 4)
    assert probe.last == pytest.approx(0.0)

    clock.advance(0.18)  # due at 0.25, ran at 0.38: a stall swallowed two ticks
    assert probe.last == pytest.approx(0.13)
    assert probe.worst == pytest.approx(0.13)
    assert probe.take_window() == pytest.approx(0.13)
    assert probe.take_window() == 0.0

    clock.advance(0.02)  # next due at 0.40
    assert probe.last == pytest.approx(0.0)
    probe.stopService()
    assert not clock.getDelayedCalls()


def make_feed() -> tuple[Router, RouterStatsFeed, Clock]:
    clock = Clock()
    router = Router(clock=clock, wallclock=lambda: 1733758245.123)
    probe = ReactorLagProbe(clock, interval=0.05)
    feed = RouterStatsFeed(router, probe, interval=1.0, clock=clock, wallclock=lambda: 0.0)
    probe.startService()
    feed.startService()
    return router, feed, clock


def test_a_sample_reports_connections_channels_and_rates() -> None:
    """
    Each interval a subscriber of C{router.stats} gets the connection count
    by dialect, the channels by subscribers (busiest first), totals and
    the rates over the interval.
    """
    router, _feed, clock = make_feed()
    watcher, a, b = FakeSession(), FakeSession(), FakeSession()
    for session in (watcher, a, b):
        router.register_session(session)
    router.subscribe(watcher, ROUTER_STATS.channel)
    router.subscribe(a, "files")
    router.subscribe(b, "files")
    router.subscribe(a, "git")

    clock.pump([0.05] * 10)
    router.publish_many("files", list(range(10)))
    clock.pump([0.05] * 10)

    (frame,) = watcher.frames
    sample = decode_text_frame(frame)["data"]
    assert sample["connections"] == 3
    assert sample["channels"] == [
        {"channel": "files", "subscribers": 2},
        {"channel": "git", "subscribers": 1},
        {"channel": "router.stats", "subscribers": 1},
    ]
    assert sample["channelCount"] == 3
    assert sample["published"] == 10
    assert sample["delivered"] == 20
    assert sample["eventsPerSecond"] == pytest.approx(10.0)
    assert sample["deliveriesPerSecond"] == pytest.approx(20.0)
    assert sample["reactorLagMs"] == {"last": 0.0, "max": 0.0}
    assert sample["interval"] == 1.0

    clock.pump([0.05] * 20)
    second = decode_text_frame(watcher.frames[1])["data"]
    assert second["eventsPerSecond"] == pytest.approx(1.0)  # the first sample itself


def test_no_sample_is_sent_while_nobody_listens_and_the_list_is_bounded() -> None:
    """
    Without a subscriber nothing is published (the channel stays empty);
    with more channels than L{MAX_LISTED_CHANNELS} the sample lists that
    many and counts them all.
    """
    router, _feed, clock = make_feed()
    session = FakeSession()
    router.register_session(session)
    for n in range(MAX_LISTED_CHANNELS + 10):
        router.subscribe(session, f"c{n:03}")
    clock.advance(3.0)
    assert router.position(ROUTER_STATS.channel).seq == 0

    router.subscribe(session, ROUTER_STATS.channel)
    clock.advance(1.0)
    sample = decode_text_frame(session.frames[-1])["data"]
    assert len(sample["channels"]) == MAX_LISTED_CHANNELS
    assert sample["channelCount"] == MAX_LISTED_CHANNELS + 11


def test_clients_cannot_publish_on_the_stats_channel_and_it_is_released() -> None:
    """
    C{router.stats} is claimed by the router while the feed runs (clients
    may not C{send} on it) and released when it stops.
    """
    router, feed, _clock = make_feed()
    assert router.claims.claims(ROUTER_STATS.channel)
    feed.stopService()
    assert not router.claims.claims(ROUTER_STATS.channel)
