"""
The MCP clients the server keeps state for: 2025-11-25 sessions (named by
C{Mcp-Session-Id}, with their calls in flight and their subscriptions),
and 2026-07-28 C{subscriptions/listen} streams. Each is a router session
(see L{cluso_router.mcp.stream}), so the connection limit counts it and a
subscription is a subscription of the router.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from cluso_router.mcp.protocol import INTERNAL_ERROR, INVALID_PARAMS, RpcError
from cluso_router.mcp.resources import channel_of
from cluso_router.mcp.stream import (
    DEFAULT_IDLE_TIMEOUT,
    LEGACY_ENCODER,
    NotificationEncoder,
    NotificationSession,
    NotificationStream,
)
from cluso_router.router.router import Router
from cluso_router.ws.limits import Limits


class Client:
    """
    What every MCP client the server keeps has: its notification stream
    and the router session behind it.
    """

    def __init__(self, stream: NotificationStream, session: NotificationSession) -> None:
        self.stream = stream
        self.session = session

    def notify(self, frame: bytes) -> None:
        self.session.deliver(frame)


class LegacySession(Client):
    """
    One 2025-11-25 session.

    @ivar calls: the Deferreds of its requests in flight, by request id,
        for C{notifications/cancelled}.
    """

    def __init__(
        self,
        session_id: str,
        version: str,
        stream: NotificationStream,
        session: NotificationSession,
    ) -> None:
        super().__init__(stream, session)
        self.id = session_id
        self.version = version
        self.calls: dict[Any, Deferred[Any]] = {}

    def cancel(self, request_id: Any) -> None:
        """
        Stop a request in flight; unknown or finished ones are ignored (the
        client may cancel what just finished).
        """
        call = self.calls.pop(request_id, None)
        if call is not None:
            call.cancel()


class Listener(Client):
    """
    One 2026-07-28 C{subscriptions/listen} stream, and the list changes it
    asked to hear of.
    """

    def __init__(
        self,
        stream: NotificationStream,
        session: NotificationSession,
        encoder: NotificationEncoder,
        changes: frozenset[str],
    ) -> None:
        super().__init__(stream, session)
        self.encoder = encoder
        self.changes = changes


class Clients:
    """
    Every MCP client the server keeps, limited with the router's other
    sessions by C{limits.max_connections}.
    """

    log = Logger()

    def __init__(
        self,
        router: Router,
        limits: Limits,
        clock: IReactorTime,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._router = router
        self._limits = limits
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._sessions: dict[str, LegacySession] = {}
        self._listeners: set[Listener] = set()

    def __len__(self) -> int:
        return len(self._sessions) + len(self._listeners)

    def _admit(self) -> None:
        if self._router.connection_count >= self._limits.max_connections:
            self._router.refusals["capacity"] += 1
            raise RpcError(INTERNAL_ERROR, "Service Unavailable: too many connections", status=503)

    def _session(
        self, stream: NotificationStream, encoder: NotificationEncoder
    ) -> NotificationSession:
        session = NotificationSession(
            stream,
            stream,
            encoder,
            max_queue_bytes=self._limits.max_queue_bytes,
            counters=self._router.queue_counters,
        )
        session.attach()
        self._router.register_session(session)
        return session

    def start_session(self, version: str) -> LegacySession:
        """
        A new legacy session, registered with the router.

        @raise RpcError: (503) the server has as many sessions as it takes.
        """
        self._admit()
        session_id = secrets.token_urlsafe(24)
        stream = NotificationStream(
            self._clock, True, lambda: self._ended(session_id), self._idle_timeout
        )
        legacy = LegacySession(session_id, version, stream, self._session(stream, LEGACY_ENCODER))
        self._sessions[session_id] = legacy
        return legacy

    def session(self, session_id: str) -> LegacySession | None:
        return self._sessions.get(session_id)

    def _ended(self, session_id: str) -> None:
        legacy = self._sessions.pop(session_id, None)
        if legacy is not None:
            self._forget(legacy)
            for call in list(legacy.calls.values()):
                call.cancel()

    def _forget(self, client: Client) -> None:
        client.session.stopProducing()
        self._router.unregister_session(client.session)

    def listen(
        self,
        request: Request,
        request_id: Any,
        channels: Sequence[str],
        changes: Iterable[str],
        first: bytes,
    ) -> Listener:
        """
        A listen stream on C{request} (whose headers are set), subscribed to
        C{channels} and told of the list C{changes} named; C{first} (the
        acknowledgment) is written before anything else.

        @raise RpcError: (503) the server has as many sessions as it takes.
        """
        self._admit()
        encoder = NotificationEncoder(request_id)
        holder: list[Listener] = []
        stream = NotificationStream(self._clock, False, lambda: self._unlisten(holder[0]))
        listener = Listener(stream, self._session(stream, encoder), encoder, frozenset(changes))
        holder.append(listener)
        self._listeners.add(listener)
        for channel in channels:
            self._router.subscribe(listener.session, channel)
        request.write(first)
        stream.open(request)
        return listener

    def _unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        self._forget(listener)

    def subscribe(self, client: Client, uri: str) -> None:
        """
        Subscribe C{client} to the channel C{uri} names.

        @raise RpcError: it names no channel, or the client holds as many
            subscriptions as a connection may.
        """
        channel = channel_of(uri)
        if channel is None:
            raise RpcError(
                INVALID_PARAMS,
                f"Only channels can be subscribed (cluso://channels/<channel>), not {uri!r}",
            )
        router = self._router
        limit = self._limits.max_subscriptions
        if (
            router.subscribe(client.session, channel)
            and router.subscription_count(client.session) > limit
        ):
            router.unsubscribe(client.session, channel)
            raise RpcError(INVALID_PARAMS, f"A session may hold at most {limit} subscriptions")

    def unsubscribe(self, client: Client, uri: str) -> None:
        channel = channel_of(uri)
        if channel is not None:
            self._router.unsubscribe(client.session, channel)

    def subscribable(self, uris: Iterable[Any]) -> list[str]:
        """
        The URIs of C{uris} that name channels, as many as one session may
        subscribe to.
        """
        honored = [uri for uri in uris if isinstance(uri, str) and channel_of(uri) is not None]
        return list(dict.fromkeys(honored))[: self._limits.max_subscriptions]

    def announce(self, method: str, change: str) -> None:
        """
        Tell every legacy session, and every listener that asked for
        C{change}, that a list changed (C{method}).
        """
        for legacy in list(self._sessions.values()):
            legacy.notify(LEGACY_ENCODER.notice(method))
        for listener in list(self._listeners):
            if change in listener.changes:
                listener.notify(listener.encoder.notice(method))

    def end_all(self) -> None:
        """
        End every session and stream (the server is stopping).
        """
        for client in [*self._sessions.values(), *self._listeners]:
            client.stream.end()
