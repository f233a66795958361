"""
Bursts handed over at once: C{Router.publish_many}, a broadcaster's burst
scope, and a session of a real router writing a burst once.
"""

from __future__ import annotations

from typing import Any

import pytest
import txredisapi  # type: ignore[import-untyped]
from support.transports import CountingTransport, split_frames
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from zope.interface import implementer

from cluso_router.backplane.envelope import envelope
from cluso_router.backplane.redis import RedisAddress, RedisBackplane, _Factory, _Subscriber
from cluso_router.interfaces import IPublisher
from cluso_router.router.broadcaster import MAX_BURST_EVENTS, Broadcaster
from cluso_router.router.event import DeliveryReport, InvalidEvent
from cluso_router.router.router import Router
from cluso_router.testing import FakeSession, RecordingPublisher, decode_text_frame
from cluso_router.ws.json.codec import JSON_ENCODER
from cluso_router.ws.session import Session


class NoConnection:
    def sendCloseFrame(
        self, code: Any = None, reasonUtf8: Any = None, isReply: bool = False
    ) -> None:
        pass

    def dropConnection(self, abort: bool = False) -> None:
        pass


def seqs(frames: list[bytes]) -> list[int]:
    return [decode_text_frame(f)["seq"] for f in frames]


def test_publish_many_numbers_and_delivers_in_order() -> None:
    """
    C{publish_many} gives the items consecutive C{seq}s in the order given,
    keeps them in history and delivers each to every subscriber.
    """
    router = Router(clock=Clock())
    a, b = FakeSession(), FakeSession()
    for session in (a, b):
        router.register_session(session)
        router.subscribe(session, "files")

    reports = router.publish_many("files", [{"n": n} for n in range(5)])

    assert [r.delivered for r in reports] == [2] * 5
    assert seqs(a.frames) == seqs(b.frames) == [1, 2, 3, 4, 5]
    assert [
        e.data for e in router.history.since("files", 0, router.position("files").epoch).events
    ] == [{"n": n} for n in range(5)]


def test_publish_many_publishes_nothing_when_one_item_is_invalid() -> None:
    """
    One item that is not strict JSON refuses the whole batch before any
    item is numbered, kept or sent.
    """
    router = Router(clock=Clock())
    session = FakeSession()
    router.register_session(session)
    router.subscribe(session, "files")

    with pytest.raises(InvalidEvent):
        router.publish_many("files", [{"n": 1}, {"n": float("nan")}])

    assert session.frames == []
    assert router.position("files").seq == 0


def test_publish_many_reaches_each_real_session_in_one_write() -> None:
    """
    Through a router and real sessions, a burst of 100 published with
    C{publish_many} costs each subscriber one write, in a turn where it
    already wrote one event.
    """
    clock = Clock()
    router = Router(clock=clock)
    transports = [CountingTransport() for _ in range(3)]
    for transport in transports:
        session = Session(NoConnection(), transport, JSON_ENCODER, coalescer=router.writes)
        router.register_session(session)
        router.subscribe(session, "bench")

    router.publish("bench", "alone")
    router.publish_many("bench", list(range(100)))

    assert [t.writes for t in transports] == [2, 2, 2]
    clock.advance(0)
    assert [t.writes for t in transports] == [2, 2, 2]


def test_a_burst_is_handed_on_as_one_batch_per_channel_run() -> None:
    """
    Inside C{burst()}, emits are held; on leaving they go to the publisher
    with C{publish_many}, one call per run of one channel, in order, and
    each emit's Deferred fires with its own report.
    """
    calls: list[tuple[str, list[Any]]] = []

    @implementer(IPublisher)
    class Batching(RecordingPublisher):
        def publish_many(self, channel: str, items: Any) -> list[DeliveryReport]:
            calls.append((channel, list(items)))
            return [DeliveryReport(n, 0) for n, _ in enumerate(items)]

    broadcaster = Broadcaster(Batching())
    answers: list[Deferred[DeliveryReport]] = []
    with broadcaster.burst():
        with broadcaster.burst():
            answers.append(broadcaster.emit("a", 1))  # type: ignore[arg-type]
        answers.append(broadcaster.emit("a", 2))  # type: ignore[arg-type]
        answers.append(broadcaster.emit("b", 3))  # type: ignore[arg-type]
        answers.append(broadcaster.emit("a", 4))  # type: ignore[arg-type]
        assert calls == []

    assert calls == [("a", [1, 2]), ("b", [3]), ("a", [4])]
    results: list[DeliveryReport] = []
    for answer in answers:
        answer.addCallback(results.append)
    assert results == [
        DeliveryReport(0, 0),
        DeliveryReport(1, 0),
        DeliveryReport(0, 0),
        DeliveryReport(0, 0),
    ]


def test_a_burst_with_an_invalid_event_publishes_the_valid_ones() -> None:
    """
    A held event the publisher refuses makes the batch fall back to one
    publish per event: the valid ones are delivered, the invalid one is
    reported as one failed delivery.
    """
    router = Router(clock=Clock())
    session = FakeSession()
    router.register_session(session)
    router.subscribe(session, "files")
    broadcaster = Broadcaster(router)

    with broadcaster.burst():
        answers = [broadcaster.emit("files", data) for data in (1, float("nan"), 3)]

    results: list[DeliveryReport] = []
    for answer in answers:
        answer.addCallback(results.append)  # type: ignore[attr-defined]
    assert [r.delivered for r in results] == [1, 0, 1]
    assert results[1].failed == 1
    assert len(session.frames) == 2


def test_a_burst_reports_an_unreachable_backplane_once_per_event() -> None:
    """
    When the backplane fails the whole batch, every held emit fires with
    one failed delivery instead of an unhandled error.
    """

    @implementer(IPublisher)
    class Down(RecordingPublisher):
        def publish_many(self, channel: str, items: Any) -> Any:
            return fail(ConnectionError("Redis cannot be reached"))

    broadcaster = Broadcaster(Down())
    with broadcaster.burst():
        answers = [broadcaster.emit("files", n) for n in range(3)]
    results: list[DeliveryReport] = []
    for answer in answers:
        answer.addCallback(results.append)  # type: ignore[attr-defined]
    assert results == [DeliveryReport(0, 1)] * 3


def test_a_burst_holds_a_bounded_number_of_events() -> None:
    """
    A burst hands its events on every L{MAX_BURST_EVENTS}, so a source that
    emits without end inside one scope holds a bounded amount.
    """
    publisher = RecordingPublisher()
    broadcaster = Broadcaster(publisher)
    with broadcaster.burst():
        for n in range(MAX_BURST_EVENTS + 5):
            broadcaster.emit("files", n)
        assert len(publisher.published) == MAX_BURST_EVENTS
    assert len(publisher.published) == MAX_BURST_EVENTS + 5
    assert [data for _, data in publisher.published] == list(range(MAX_BURST_EVENTS + 5))


def test_a_burst_from_another_node_reaches_each_session_in_one_write() -> None:
    """
    Ten events that arrive from Redis in one read (a burst another node
    published) are handled in that read, with hiredis, and reach each
    subscriber of this node in one write, in order.
    """
    assert txredisapi.RedisProtocol is txredisapi.HiredisProtocol, (
        "hiredis is not installed: txredisapi would take one reply per reactor turn"
    )
    clock = Clock()
    router = Router(clock=clock)
    backplane = RedisBackplane(router, RedisAddress(), clock=clock)
    transports = [CountingTransport() for _ in range(3)]
    for transport in transports:
        session = Session(NoConnection(), transport, JSON_ENCODER, coalescer=router.writes)
        router.register_session(session)
        router.subscribe(session, "build")
    subscriber = _Factory(_Subscriber, RedisAddress(), 5.0, backplane).buildProtocol(None)

    read = b""
    for seq in range(1, 11):
        body = envelope("build", "2026-12-03T17:00:00.000Z", b"%d" % seq, seq, None)
        message = b"%d epoch1 %s" % (seq, body)
        channel = backplane.events_channel.encode()
        read += b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(channel),
            channel,
            len(message),
            message,
        )
    subscriber.dataReceived(read)

    assert [t.writes for t in transports] == [1, 1, 1]
    for transport in transports:
        assert seqs(split_frames(transport.value())) == list(range(1, 11))
