"""
The ping sweep against a real client: a peer that stops answering is dropped.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest_twisted
from twisted.internet import task

from cluso_router.testing import connect_client


@pytest_twisted.ensureDeferred
async def test_peer_that_never_answers_pings_is_dropped(server: Any) -> None:
    """
    Over real sockets: a well-behaved client survives sweeps (its library
    answers pings), while a raw peer that completed the handshake and then
    went silent is aborted by the second sweep.
    """
    from twisted.internet import reactor

    router = server.service.router
    polite = await connect_client(server.ws_url)
    await polite.next_message()

    host, port = server.url[len("http://") :].rstrip("/").split(":")
    silent = socket.create_connection((host, int(port)))
    silent.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    deadline = time.monotonic() + 5
    while router.connection_count < 2 and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.01, lambda: None)
    assert router.connection_count == 2

    sweeper = server.service.sweeper
    await sweeper.sweep()
    await task.deferLater(reactor, 0.2, lambda: None)
    await sweeper.sweep()
    await task.deferLater(reactor, 0.1, lambda: None)

    assert router.connection_count == 1
    reply = await polite.request({"type": "invoke", "id": 1, "channel": "server.info"})
    assert reply["data"]["connections"] == 1
    silent.settimeout(2)
    received = b""
    try:
        while chunk := silent.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # an abort resets the connection
    assert received.startswith(b"HTTP/1.1 101")
    silent.close()
    await polite.close()
