"""
A WAMP connection as the router and the realm see it: the ordered, bounded
send path of every session, plus who the client joined as and what it
announced; and what the realm needs of the handler speaking for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from cluso_router.router.router import CLOSE_GOING_AWAY
from cluso_router.ws.session import Session

if TYPE_CHECKING:
    from cluso_router.ws.wamp.pubsub import SessionPubSub
    from cluso_router.ws.wamp.rpc import SessionRPC

#: Topics and procedures the router itself owns.
RESERVED_PREFIX: Final = "wamp."


class Peer(Protocol):
    """
    What the realm needs of a joined session's handler.
    """

    pubsub: SessionPubSub
    rpc: SessionRPC

    def send(self, msg: Any) -> None: ...

    def kill(self, reason: str, message: str | None) -> None: ...


class WampSession(Session):
    """
    A connection speaking WAMP: the ordered, bounded send path of every
    session, plus who the client joined as and what it announced.

    @ivar wamp_id: the WAMP session id while joined, else C{None}.
    @ivar roles: the client's roles and their features, from its HELLO.
    @ivar peer: the handler speaking for it, while joined.
    @ivar testaments: PUBLISH messages to send when it leaves, by scope
        (C{detached}, C{destroyed}).
    @ivar farewell: the GOODBYE frame sent before the connection is closed
        for a server shutdown, while joined.
    """

    wamp_id: int | None = None
    authid: str | None = None
    authrole: str | None = None
    authmethod: str | None = None
    authprovider: str | None = None
    authextra: Mapping[str, Any] | None = None
    roles: Mapping[str, Any] = {}
    transport_details: Mapping[str, Any] = {}
    peer: Peer | None = None
    testaments: dict[str, list[Any]] = {}
    farewell: bytes | None = None

    def peer_address(self) -> Any:
        """
        The address of the other end of the connection, if it has one.
        """
        get_peer = getattr(self._transport, "getPeer", None)
        return get_peer() if get_peer is not None else None

    def supports(self, role: str, feature: str) -> bool:
        """
        Whether the client announced C{feature} for C{role} in its HELLO.
        """
        details = self.roles.get(role)
        features = details.get("features") if isinstance(details, dict) else None
        return isinstance(features, dict) and features.get(feature) is True

    def details(self, realm: str) -> dict[str, Any]:
        """
        What the session meta API says about this session.
        """
        return {
            "realm": realm,
            "session": self.wamp_id,
            "authid": self.authid,
            "authrole": self.authrole,
            "authmethod": self.authmethod,
            "authprovider": self.authprovider,
            "authextra": dict(self.authextra or {}),
            "transport": dict(self.transport_details),
        }

    def close(self, code: int, reason: str) -> None:
        if code == CLOSE_GOING_AWAY and self.farewell is not None:
            self.deliver(self.farewell)
        super().close(code, reason)
