"""
Every frame a session writes counts against its byte budget: pings,
answers to a client's pings, and a frame bigger than the whole budget.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from cluso_router.router.stats import QueueCounters
from cluso_router.ws.json.codec import JSON_ENCODER
from cluso_router.ws.session import CLOSE_SLOW_CONSUMER, Session


class Connection:
    def __init__(self) -> None:
        self.closed: list[int | None] = []

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        self.closed.append(code)

    def dropConnection(self, abort: bool = False) -> None:
        pass


def session(max_queue_bytes: int = 1000) -> tuple[Session, StringTransport, Connection]:
    transport = StringTransport()
    connection = Connection()
    new = Session(
        connection,
        transport,
        JSON_ENCODER,
        max_queue_bytes=max_queue_bytes,
        counters=QueueCounters(),
    )
    new.attach()
    return new, transport, connection


def test_pongs_to_a_client_that_does_not_read_fill_the_budget_and_close_it() -> None:
    """
    While the transport is paused, pongs queue like events; once they pass
    the budget the client is closed as a slow consumer.
    """
    s, transport, connection = session(max_queue_bytes=1000)
    s.pauseProducing()
    for _ in range(7):
        s.pong(b"p" * 125)
    assert connection.closed == []
    s.pong(b"p" * 125)
    assert connection.closed == [CLOSE_SLOW_CONSUMER]
    assert transport.value() == b""
    assert s.counters.slow_consumer_closes == 1


def test_a_pong_echoes_the_ping_payload_and_a_ping_is_empty() -> None:
    """
    A pong frame carries the ping's payload, unmasked; the sweep's ping is
    an empty ping frame, both in order with other frames.
    """
    s, transport, _ = session()
    s.pong(b"abc")
    s.ping()
    assert transport.value() == b"\x8a\x03abc\x89\x00"


def test_a_frame_bigger_than_the_budget_closes_instead_of_buffering() -> None:
    """
    One frame larger than the whole budget is never written: the session
    is closed with 4008 and the transport holds nothing of it.
    """
    s, transport, connection = session(max_queue_bytes=1000)
    assert not s.deliver(b"x" * 1001)
    assert connection.closed == [CLOSE_SLOW_CONSUMER]
    assert transport.value() == b""
    assert not s.deliver(b"small")


def test_queued_bytes_count_what_the_transport_holds() -> None:
    """
    The queue size the metrics show includes what sits in the transport's
    buffer, not only this session's own queue.
    """
    s, _, _ = session()

    class Buffering:
        dataBuffer = b"x" * 300
        _tempDataLen = 200

    s._transport = Buffering()
    assert s.queued_bytes == 500
