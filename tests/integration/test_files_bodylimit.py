"""
The request body limit: a body above it gets 413 with the JSON envelope as
soon as its size is known (Content-Length) or as soon as it grows past the
limit (chunked), before the rest is sent; bodies within it work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from support.servers import start_service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from cluso_router.tap import Options
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY

LIMIT = 1024


@pytest_twisted.async_yield_fixture
async def port(tmp_path: Path) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(root, sources=(), auth="none", max_body=LIMIT)
    yield running.port
    await running.service.stopService()


class RawClient(Protocol):
    """
    Sends bytes as told and collects the response; C{answered} fires once a
    whole response (headers and Content-Length body) is in.
    """

    def __init__(self) -> None:
        self.received = b""
        self.answered: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        head, separator, body = self.received.partition(b"\r\n\r\n")
        if not separator or self.answered.called:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            self.answered.callback(self.received)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.answered.called:
            self.answered.callback(self.received)
        self.closed.callback(None)


async def raw(port: int, *chunks: bytes) -> RawClient:
    from twisted.internet import reactor

    client = RawClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    for chunk in chunks:
        client.transport.write(chunk)  # type: ignore[union-attr]
    return client


def parse(response: bytes) -> tuple[bytes, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


HEAD = b"POST /api/files/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest_twisted.ensureDeferred
async def test_a_declared_length_over_the_limit_is_refused_before_the_body(port: int) -> None:
    """
    Headers alone, announcing ten times the limit: the 413 arrives without
    a single body byte sent, and no '100 Continue' is offered first.
    """
    from twisted.internet import reactor

    client = await raw(
        port,
        HEAD + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (LIMIT * 10),
    )
    client.answered.addTimeout(5, reactor)
    status, body = parse(await client.answered)
    assert status == b"HTTP/1.1 413 Payload Too Large"
    assert body["success"] is False
    assert body["error"] == f"Request body too large: the limit is {LIMIT} bytes"
    assert b"100 Continue" not in client.received
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_is_refused_as_it_grows_past_the_limit(port: int) -> None:
    """
    A chunked body is counted as it arrives: once past the limit the 413
    comes while the client has not even finished sending.
    """
    from twisted.internet import reactor

    chunk = b"%x\r\n%s\r\n" % (256, b"x" * 256)
    client = await raw(port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n", *[chunk] * 6)
    client.answered.addTimeout(5, reactor)
    status, body = parse(await client.answered)
    assert status == b"HTTP/1.1 413 Payload Too Large"
    assert "too large" in body["error"]
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_client_that_keeps_sending_still_reads_the_answer(port: int) -> None:
    """
    A client sending its whole oversized body at once still gets the 413
    (the server drains instead of resetting the connection).
    """
    from twisted.internet import reactor

    size = LIMIT * 64
    client = await raw(port, HEAD + b"Content-Length: %d\r\n\r\n" % size + b"x" * size)
    client.answered.addTimeout(5, reactor)
    status, _ = parse(await client.answered)
    assert status == b"HTTP/1.1 413 Payload Too Large"
    await client.closed


@pytest_twisted.ensureDeferred
async def test_bodies_within_the_limit_are_served(port: int, tmp_path: Path) -> None:
    """
    A body at the limit is read and handled as usual, also chunked.
    """
    content = "y" * (LIMIT - 40)
    body = json.dumps({"path": "ok.txt", "content": content}).encode()
    assert len(body) <= LIMIT
    response = await treq.post(f"http://127.0.0.1:{port}/api/files/write", data=body)
    assert response.code == 200
    assert json.loads(await response.content())["data"]["bytesWritten"] == len(content)
    assert (tmp_path / "root" / "ok.txt").read_text() == content


def test_the_limit_is_an_option_with_a_ten_mib_default() -> None:
    """
    --max-body sets the limit; without it the limit is 10 MiB.
    """
    assert DEFAULT_MAX_BODY == 10 * 1024 * 1024
    options = Options()
    options.parseOptions(["--auth", "none", "--max-body", "2048"])
    assert options["config"].max_body == 2048
    default = Options()
    default.parseOptions(["--auth", "none"])
    assert default["config"].max_body == DEFAULT_MAX_BODY
