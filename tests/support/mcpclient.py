"""
The official MCP Python SDK's client against a server under test.

The SDK runs on an asyncio loop while the server runs on the test's Twisted
reactor, so a scenario (an async function of the client) runs in a thread
of its own with its own loop: L{in_thread}. Inside it, L{reactor_call}
reaches the server's objects on the reactor thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred

#: C{mode} values: the 2025-11-25 handshake, or discovery, which picks
#: 2026-07-28 (no sessions) from what the server offers.
LEGACY = "legacy"
MODERN = "auto"


def in_thread(scenario: Callable[..., Awaitable[Any]], *args: Any) -> Deferred[Any]:
    """
    Run C{scenario(*args)} on an asyncio loop in a worker thread; the
    Deferred fires with its result, on the reactor, within 60 seconds.
    """
    running = threads.deferToThread(anyio.run, scenario, *args)
    return running.addTimeout(60, reactor)


def reactor_call(f: Callable[..., Any], *args: Any) -> Any:
    """
    Call C{f} on the reactor thread from a scenario and wait for its result.
    """
    return threads.blockingCallFromThread(reactor, f, *args)


@asynccontextmanager
async def mcp_client(
    url: str,
    token: str | None,
    mode: str = LEGACY,
    message_handler: Callable[[Any], Awaitable[None]] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """
    A connected client of the MCP endpoint at C{url}, sending C{token} as
    C{Authorization: Bearer} (and any other C{headers}).
    """
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(headers=sent) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport, mode=mode, cache=None, message_handler=message_handler
        ) as client:
            yield client
