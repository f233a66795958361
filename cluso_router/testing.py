"""
In-memory fakes for testing code that uses cluso-router, without sockets.

C{FakeSession} stands in for a WebSocket client at the router's seam;
C{RecordingPublisher} stands in for the router at the broadcaster's seam;
C{make_source_context} gives an event source what a server would. For
tests on a running reactor (trial, or pytest with pytest-twisted):
C{start_server} runs a whole server in the process on a free loopback
port, C{connect_client} is a real WebSocket client, and C{until} waits for
a condition.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import Clock, deferLater
from twisted.web.resource import Resource
from zope.interface import implementer

from cluso_router.config import ServerConfig
from cluso_router.interfaces import IEventSourceFactory, IFrameEncoder, IPublisher, ISession
from cluso_router.router.event import DeliveryReport
from cluso_router.router.router import Router
from cluso_router.service import ClusoService, EventBroadcaster
from cluso_router.sources import SourceContext, option_defaults
from cluso_router.workspace.ledger import FileChangeLedger
from cluso_router.ws.json.codec import JSON_ENCODER
from cluso_router.ws.session import new_connection_id


def decode_text_frame(frame: bytes) -> Any:
    """
    The JSON value inside one unmasked WebSocket text frame.
    """
    if frame[0] != 0x81:
        raise ValueError(f"not a single text frame: first byte {frame[0]:#x}")
    length = frame[1] & 0x7F
    offset = 2
    if length == 126:
        length = int.from_bytes(frame[2:4], "big")
        offset = 4
    elif length == 127:
        length = int.from_bytes(frame[2:10], "big")
        offset = 10
    payload = frame[offset : offset + length]
    if len(payload) != length:
        raise ValueError("truncated frame")
    return json.loads(payload)


@implementer(ISession)
class FakeSession:
    """
    A session that keeps what it is sent.

    @ivar frames: every frame delivered, in order.
    @ivar fail: when true, deliveries are refused (as by a closed socket).
    @ivar broken: when true, deliveries raise (as by a buggy transport).
    """

    def __init__(
        self, connection_id: str | None = None, encoder: IFrameEncoder = JSON_ENCODER
    ) -> None:
        self.connection_id = connection_id or new_connection_id()
        self.channels: tuple[str, ...] = ()
        self.encoder = encoder
        self.heard = True
        self.frames: list[bytes] = []
        self.pings = 0
        self.aborted = False
        self.closed: tuple[int, str] | None = None
        self.fail = False
        self.broken = False

    def deliver(self, frame: bytes) -> bool:
        if self.broken:
            raise RuntimeError(f"{self.connection_id} is broken")
        if self.fail or self.aborted:
            return False
        self.frames.append(frame)
        return True

    @property
    def messages(self) -> list[Any]:
        """
        The JSON values of every frame received so far.
        """
        return [decode_text_frame(frame) for frame in self.frames]

    def ping(self) -> None:
        self.pings += 1

    def abort(self) -> None:
        self.aborted = True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@implementer(IPublisher)
class RecordingPublisher:
    """
    A publisher that records C{(channel, data)} pairs and delivers nothing.
    """

    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    def publish(self, channel: str, data: Any, extras: Any = None) -> DeliveryReport:
        self.published.append((channel, data))
        return DeliveryReport(0, 0)

    def publish_many(self, channel: str, items: Sequence[Any]) -> list[DeliveryReport]:
        return [self.publish(channel, data) for data in items]


@dataclass
class RunningServer:
    """
    A whole server started by L{start_server}: its service, where it
    listens, and how to authenticate to it. C{await server.stop()} when
    done.
    """

    service: ClusoService
    url: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "ws"

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rpartition(":")[2])

    @property
    def token(self) -> str | None:
        return self.service.config.token

    @property
    def headers(self) -> dict[str, str]:
        """
        The headers that authenticate a request (none when auth is off).
        """
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def stop(self) -> None:
        stopped = self.service.stopService()
        if stopped is not None:
            await stopped


def start_server(root: str | os.PathLike[str], reactor: Any = None, **config: Any) -> RunningServer:
    """
    A L{ClusoService} on C{root} (made if missing) with the
    L{ServerConfig} fields in C{config}, started in this process and
    listening on a free loopback port. Sources run as they would
    (C{sources=()} runs none); auth is on unless C{auth="none"}, with
    C{token} as given or made up.
    """
    if reactor is None:
        from twisted.internet import reactor
    os.makedirs(root, exist_ok=True)
    service = ClusoService(
        ServerConfig(root=os.fspath(root), listen="tcp:0:interface=127.0.0.1", **config),
        reactor=reactor,
    )
    service.startService()
    port = service.port
    if port is None:
        raise RuntimeError("the server did not start listening")
    return RunningServer(service, f"http://127.0.0.1:{getattr(port.getHost(), 'port', 0)}/")


async def until(
    condition: Callable[[], bool], timeout: float = 10.0, clock: Any = None, step: float = 0.02
) -> None:
    """
    Wait until C{condition()} holds, checking every C{step} seconds of
    C{clock} (the running reactor by default).

    @raise TimeoutError: when it did not hold within C{timeout} seconds.
    """
    if clock is None:
        from twisted.internet import reactor as clock
    deadline = clock.seconds() + timeout
    while not condition():
        if clock.seconds() >= deadline:
            raise TimeoutError(f"condition not met within {timeout:g} s")
        await deferLater(clock, step, lambda: None)


def discovered(name: str) -> IEventSourceFactory:
    """
    The installed event source C{name}, as the server finds it.

    @raise AssertionError: it was not found, with the discovery problems
        that name it (other plugins' problems are not yours).
    """
    from cluso_router.sources import discover_sources

    discovery = discover_sources()
    factory = discovery.named(name)
    if factory is None:
        mine = [p for p in discovery.problems if name in p] or list(discovery.problems)
        raise AssertionError(f"event source {name!r} was not found; problems: {mine}")
    return factory


def make_source_context(
    root: str = ".",
    *,
    name: str = "test",
    options: Mapping[str, Any] | None = None,
    factory: IEventSourceFactory | None = None,
    router: Router | None = None,
    publisher: IPublisher | None = None,
    reactor: Any = None,
    ignore: Sequence[str] = (),
    web_root: Resource | None = None,
) -> SourceContext:
    """
    A L{SourceContext} for testing an event source without a server.

    @param factory: when given, its options' defaults fill in what
        C{options} leaves out, as the server does.
    @param router: default: a new L{Router} on C{reactor}.
    @param publisher: where the broadcaster publishes; default the router
        (a L{RecordingPublisher} records instead).
    @param reactor: the reactor or clock the source runs on; default a new
        L{twisted.internet.task.Clock}.
    """
    clock = reactor if reactor is not None else Clock()
    router = router if router is not None else Router(cwd=root, clock=clock)
    broadcaster = EventBroadcaster(publisher if publisher is not None else router)
    values = {**(option_defaults(factory) if factory is not None else {}), **(options or {})}
    return SourceContext(
        router=router,
        broadcaster=broadcaster,
        file_changes=FileChangeLedger(broadcaster, clock=clock),
        root=root,
        reactor=clock,
        options=values,
        ignore=tuple(ignore),
        web_root=web_root,
        name=factory.name if factory is not None else name,
    )


class WebSocketTestClient:
    """
    A real WebSocket client on the running reactor, for end-to-end tests of
    a router and of event sources: frames arrive in a queue to await.

    Create with L{connect_client}.
    """

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred, DeferredQueue

        self.queue: DeferredQueue[Any] = DeferredQueue()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self.protocol: Any = None

    def send_json(self, message: Any) -> None:
        self.protocol.sendMessage(json.dumps(message).encode("utf-8"))

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.protocol.sendMessage(payload, isBinary=binary)

    async def next_message(self, timeout: float = 5.0) -> Any:
        """
        The next JSON message, failing with C{TimeoutError} after C{timeout}.
        """
        from twisted.internet import reactor

        d = self.queue.get()
        d.addTimeout(timeout, reactor)
        try:
            return await d
        except Exception as e:
            from twisted.internet.defer import TimeoutError as DeferredTimeout

            if isinstance(e, DeferredTimeout):
                raise TimeoutError(f"no message within {timeout}s") from None
            raise

    async def request(self, message: dict[str, Any], timeout: float = 5.0) -> Any:
        """
        Send C{message} and return the next reply carrying its C{id}, while
        events arriving meanwhile stay queued in order.
        """
        self.send_json(message)
        skipped = []
        try:
            while True:
                reply = await self.next_message(timeout)
                if reply.get("type") == "response" and reply.get("id") == message.get("id"):
                    return reply
                skipped.append(reply)
        finally:
            self.queue.pending[:0] = skipped

    def close(self, code: int = 1000) -> Any:
        self.protocol.sendClose(code)
        return self.closed


async def connect_client(
    url: str,
    headers: dict[str, str] | None = None,
    protocols: Sequence[str] | None = None,
) -> WebSocketTestClient:
    """
    Connect to C{url} (C{ws://host:port/ws}), wait for the handshake and
    return the client; the server's greeting is the first queued message.

    @param protocols: WebSocket subprotocols to ask for (C{wamp.2.json} for
        a WAMP session); the one chosen is the client protocol's
        C{websocket_protocol_in_use}.
    """
    from autobahn.twisted.websocket import (
        WebSocketClientFactory,
        WebSocketClientProtocol,
        connectWS,
    )

    client = WebSocketTestClient()

    class Protocol(WebSocketClientProtocol):
        def onOpen(self) -> None:
            client.protocol = self
            client.opened.callback(None)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            client.queue.put(json.loads(payload))

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            if not client.opened.called:
                client.opened.errback(ConnectionError(f"handshake failed: {code} {reason}"))
            if not client.closed.called:
                client.closed.callback((wasClean, code, reason))

    factory = WebSocketClientFactory(url, protocols=list(protocols or ()), headers=headers or {})
    factory.protocol = Protocol
    connectWS(factory)
    await client.opened
    return client
