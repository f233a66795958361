"""
What a client must do before the server reads a request: send its whole
head (request line and headers, a WebSocket handshake included) within
the deadline however it trickles the bytes, and carry credentials before
any body is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from support.servers import TEST_TOKEN, start_service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from cluso_router.ws.limits import Limits

DEADLINE = 1.0


@pytest_twisted.async_yield_fixture
async def port(tmp_path: Path) -> Any:
    """
    A server with token auth and a one-second head deadline.
    """
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(
        root, sources=(), token=TEST_TOKEN, limits=Limits(handshake_timeout=DEADLINE)
    )
    yield running.port
    await running.service.stopService()


class Client(Protocol):
    """
    Collects what the server sends; C{closed} fires with it when the
    connection ends.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(self.received)


async def connect(port: int) -> Client:
    from twisted.internet import reactor

    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


async def trickle(port: int, request: bytes) -> float:
    """
    Send C{request} one byte every 0.1 s (starting over when done) until
    the server closes the connection; the seconds that took.
    """
    from twisted.internet import reactor

    client = await connect(port)
    started = reactor.seconds()
    stream = iter(request * 1000)
    sender = LoopingCall(lambda: client.transport.write(bytes([next(stream)])))  # type: ignore[union-attr]
    sender.clock = reactor
    sender.start(0.1)
    try:
        await client.closed.addTimeout(DEADLINE * 8, reactor)
    finally:
        if sender.running:
            sender.stop()
        client.transport.abortConnection()  # type: ignore[union-attr]
    return reactor.seconds() - started  # type: ignore[no-any-return]


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"X-Padding: " + b"p" * 200 + b"\r\n\r\n"
)
REQUEST = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_a_trickled_handshake_is_cut_at_the_deadline(port: int) -> None:
    """
    A WebSocket handshake or an HTTP request sent a byte at a time (each
    byte well within the idle timeout) is dropped once the deadline has
    passed since its first byte, not kept open for as long as bytes come.
    """
    for request in (HANDSHAKE, REQUEST):
        elapsed = await trickle(port, request)
        assert DEADLINE * 0.9 <= elapsed < DEADLINE * 2, elapsed


@pytest_twisted.ensureDeferred
async def test_the_deadline_is_per_request_on_a_kept_alive_connection(port: int) -> None:
    """
    A connection that sends whole requests one after another is served
    for longer than the deadline: each head has its own.
    """
    from twisted.internet import reactor

    client = await connect(port)
    auth = b"Authorization: Bearer " + TEST_TOKEN.encode() + b"\r\n"
    for _ in range(4):
        client.transport.write(REQUEST.replace(b"\r\n\r\n", b"\r\n" + auth + b"\r\n"))  # type: ignore[union-attr]
        await deferLater(reactor, DEADLINE * 0.6, lambda: None)
    assert client.received.count(b"HTTP/1.1 200 OK") == 4
    assert not client.closed.called
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_body_without_credentials_is_refused_before_it_is_read(port: int) -> None:
    """
    A request announcing a body, without the token, gets 401 as soon as
    its headers are in: no '100 Continue', and no body byte needed (the
    server would otherwise wait for the whole body). With the token in a
    header or the query string, the same request waits for its body.
    """
    from twisted.internet import reactor

    head = (
        b"POST /api/events/demo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 60000\r\n"
        b"Expect: 100-continue\r\n"
    )
    client = await connect(port)
    client.transport.write(head + b"\r\n")  # type: ignore[union-attr]
    received = await client.closed.addTimeout(5, reactor)
    assert received.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b'WWW-Authenticate: Bearer realm="cluso"' in received
    assert b"Unauthorized: Invalid or missing API key" in received
    assert b"100 Continue" not in received

    for credentials in (
        head + b"Authorization: Bearer " + TEST_TOKEN.encode() + b"\r\n\r\n",
        head.replace(b"/demo ", b"/demo?token=" + TEST_TOKEN.encode() + b" ") + b"\r\n",
    ):
        client = await connect(port)
        client.transport.write(credentials)  # type: ignore[union-attr]
        await deferLater(reactor, 0.5, lambda: None)
        assert client.received == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.transport.abortConnection()  # type: ignore[union-attr]
        await client.closed
