"""
A session's send path: ordered writes, the bounded queue while the
transport is paused, and closing a consumer that lets it overflow.
"""

from __future__ import annotations

import gc

from support.transports import CountingTransport, split_frames
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluso_router.router.writes import MAX_GATHERED_BYTES, WriteCoalescer
from cluso_router.testing import decode_text_frame
from cluso_router.ws.json.codec import JSON_ENCODER
from cluso_router.ws.session import CLOSE_SLOW_CONSUMER, Session


class FakeConnection:
    def __init__(self) -> None:
        self.pings = 0
        self.close_frames: list[tuple[int | None, bytes | None]] = []
        self.dropped: list[bool] = []

    def sendPing(self, payload: bytes | None = None) -> None:
        self.pings += 1

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        self.close_frames.append((code, reasonUtf8))

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped.append(abort)


def make_session(max_queue_bytes: int = 1000) -> tuple[Session, StringTransport, FakeConnection]:
    transport = StringTransport()
    connection = FakeConnection()
    session = Session(connection, transport, JSON_ENCODER, max_queue_bytes=max_queue_bytes)
    session.attach()
    return session, transport, connection


def test_attach_replaces_the_upgrade_requests_producer() -> None:
    """
    The session becomes the transport's streaming producer even when the
    HTTP channel that upgraded the connection was registered before it.
    """
    transport = StringTransport()
    transport.registerProducer(object(), True)
    session = Session(FakeConnection(), transport, JSON_ENCODER)
    session.attach()
    assert transport.producer is session
    assert transport.streaming


def test_frames_queue_while_paused_and_flush_in_order() -> None:
    """
    While paused, frames wait in the queue; on resume they are written in
    the order they were delivered, after anything written before.
    """
    session, transport, _ = make_session()
    assert session.send_message({"n": 0})
    session.pauseProducing()
    for n in (1, 2, 3):
        assert session.send_message({"n": n})
    assert session.queued_bytes > 0
    written_while_paused = transport.value()
    session.resumeProducing()
    assert session.queued_bytes == 0
    assert transport.value().startswith(written_while_paused)
    frames = split_frames(transport.value())
    assert [decode_text_frame(f)["n"] for f in frames] == [0, 1, 2, 3]


def test_overflowing_the_queue_closes_with_slow_consumer_code() -> None:
    """
    A delivery that would take the queue past its byte bound is refused,
    the queue is dropped and the connection is closed with 4008.
    """
    session, _, connection = make_session(max_queue_bytes=100)
    session.pauseProducing()
    assert session.send_message({"pad": "x" * 40})
    assert not session.send_message({"pad": "x" * 80})
    assert session.queued_bytes == 0
    (code, reason), *_ = connection.close_frames
    assert code == CLOSE_SLOW_CONSUMER
    assert reason is not None
    assert b"slow consumer" in reason
    assert not session.send_message({"after": "close"})


def test_close_reason_is_cut_to_fit_a_control_frame() -> None:
    """
    A close reason is cut to 123 bytes without splitting a UTF-8 character.
    """
    session, _, connection = make_session()
    session.close(1001, "é" * 100)
    ((code, reason),) = connection.close_frames
    assert code == 1001
    assert reason is not None
    assert len(reason) <= 123
    reason.decode("utf-8")


def test_stop_producing_refuses_further_frames() -> None:
    """
    Once the transport stops its producer, nothing more is accepted.
    """
    session, transport, _ = make_session()
    session.stopProducing()
    assert not session.send_message({"late": True})
    assert transport.value() == b""


def test_batched_writes_send_each_session_one_write() -> None:
    """
    Frames handed to sessions inside a coalescer's batch are written once
    per session when it ends, in order; outside, with no clock to tell
    turns apart, each frame is written at once.
    """
    writes = WriteCoalescer()
    transports = [CountingTransport() for _ in range(2)]
    sessions = [Session(FakeConnection(), t, JSON_ENCODER, coalescer=writes) for t in transports]

    with writes.batch():
        for n in range(5):
            for session in sessions:
                assert session.deliver(b"%d," % n)
        assert [t.writes for t in transports] == [0, 0]
    sessions[0].deliver(b"after")

    assert [t.writes for t in transports] == [2, 1]
    assert transports[0].value() == b"0,1,2,3,4,after"
    assert transports[1].value() == b"0,1,2,3,4,"


def test_a_batch_of_one_frame_per_session_makes_no_garbage_per_session() -> None:
    """
    The steady case, one event per inbound read, allocates no object the
    garbage collector tracks for each session (a list each, over thousands
    of sessions, made full collections stall the reactor for 150 ms); the
    frame is written as it is.
    """
    writes = WriteCoalescer()
    transports = [CountingTransport() for _ in range(2000)]
    sessions = [Session(FakeConnection(), t, JSON_ENCODER, coalescer=writes) for t in transports]
    frame = b"one event"
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        with writes.batch():
            for session in sessions:
                session.deliver(frame)
            allocated = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert allocated < 100
    assert all(t.value() == frame and t.writes == 1 for t in transports)


def test_batch_is_bounded_and_flushed_before_control_frames() -> None:
    """
    A session that gathers more than L{MAX_GATHERED_BYTES} in one batch writes
    them then; a close (or ping) inside a batch sends what was gathered
    first, so nothing overtakes it; an aborted session drops it.
    """
    writes = WriteCoalescer()
    big, closing, aborted = (CountingTransport() for _ in range(3))
    connection = FakeConnection()
    sessions = [
        Session(FakeConnection(), big, JSON_ENCODER, coalescer=writes),
        Session(connection, closing, JSON_ENCODER, coalescer=writes),
        Session(FakeConnection(), aborted, JSON_ENCODER, coalescer=writes),
    ]
    chunk = b"x" * (MAX_GATHERED_BYTES // 2 + 1)

    with writes.batch():
        sessions[0].deliver(chunk)
        sessions[0].deliver(chunk)
        written_early = big.writes
        sessions[1].deliver(b"goodbye")
        sessions[1].close(1000, "bye")
        closed_after = closing.value()
        sessions[2].deliver(b"lost")
        sessions[2].abort()

    assert written_early == 1
    assert closed_after == b"goodbye"
    assert connection.close_frames == [(1000, b"bye")]
    assert aborted.value() == b""


def test_a_burst_within_one_turn_costs_each_session_two_writes() -> None:
    """
    Outside any batch, a session's first frame of a reactor turn is written
    at once (a lone event waits for nothing) and the other 99 of a
    100-event burst in that turn join into one write when the turn ends;
    the next turn's first frame is again written at once.
    """
    clock = Clock()
    writes = WriteCoalescer(clock)
    transports = [CountingTransport() for _ in range(3)]
    sessions = [Session(FakeConnection(), t, JSON_ENCODER, coalescer=writes) for t in transports]

    for n in range(100):
        for session in sessions:
            assert session.deliver(b"%d," % n)
    assert [t.writes for t in transports] == [1, 1, 1]
    assert all(t.value() == b"0," for t in transports)

    clock.advance(0)
    expected = b"".join(b"%d," % n for n in range(100))
    assert [t.writes for t in transports] == [2, 2, 2]
    assert all(t.value() == expected for t in transports)
    assert writes.joined == 3 * 98

    sessions[0].deliver(b"lone")
    assert transports[0].writes == 3
    assert transports[0].value().endswith(b"lone")


def test_a_burst_in_a_batch_is_one_write_per_session() -> None:
    """
    A 100-event burst handed over inside a batch (one inbound read, or
    C{Router.publish_many}) reaches each session in exactly one write, in
    order, even in a turn where the session already wrote.
    """
    clock = Clock()
    writes = WriteCoalescer(clock)
    transport = CountingTransport()
    session = Session(FakeConnection(), transport, JSON_ENCODER, coalescer=writes)
    session.deliver(b"first;")

    with writes.batch():
        for n in range(100):
            session.deliver(b"%d," % n)
        assert transport.writes == 1

    assert transport.writes == 2
    assert transport.value() == b"first;" + b"".join(b"%d," % n for n in range(100))


def test_gathered_frames_go_before_queued_ones_when_the_transport_pauses() -> None:
    """
    When the transport pauses while a session holds frames of the current
    turn, those frames are written before anything queued after them, so
    the pause never reorders a burst.
    """
    clock = Clock()
    writes = WriteCoalescer(clock)
    transport = CountingTransport()
    session = Session(
        FakeConnection(), transport, JSON_ENCODER, max_queue_bytes=1000, coalescer=writes
    )
    session.attach()
    session.deliver(b"a")
    session.deliver(b"b")
    session.pauseProducing()
    session.deliver(b"c")
    assert transport.value() == b"ab"
    session.resumeProducing()
    clock.advance(0)
    assert transport.value() == b"abc"


def test_a_turns_gathered_bytes_are_bounded() -> None:
    """
    Within one turn a session holds at most L{MAX_GATHERED_BYTES} before it
    writes them; the rest waits for the end of the turn.
    """
    clock = Clock()
    writes = WriteCoalescer(clock)
    transport = CountingTransport()
    session = Session(
        FakeConnection(), transport, JSON_ENCODER, max_queue_bytes=10**7, coalescer=writes
    )
    chunk = b"x" * (MAX_GATHERED_BYTES // 4 + 1)
    session.deliver(b"first")
    for _ in range(4):
        session.deliver(chunk)
    assert transport.writes == 2
    session.deliver(b"tail")
    clock.advance(0)
    assert transport.writes == 3
    assert transport.value() == b"first" + chunk * 4 + b"tail"
