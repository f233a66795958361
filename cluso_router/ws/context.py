"""
What the dialect handlers of a WebSocket endpoint share: the router, where
client publishes go, the limits, the access policy and the WAMP realm.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluso_router.interfaces import IPublisher
from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.ws.limits import Limits, MessageRateLimiter
from cluso_router.ws.wamp.realm import WampRealm


@dataclass(frozen=True)
class ConnectionContext:
    """
    The server side of every connection of one endpoint; each dialect's
    handler gets it instead of reaching into the Autobahn factory.

    @ivar publisher: where client publishes go: the router itself, or a
        backplane in front of it.
    @ivar policy: checked at every handshake; C{None} when the site in
        front of the endpoint checks HTTP requests itself.
    """

    router: Router
    publisher: IPublisher
    limits: Limits
    policy: AccessPolicy | None
    realm: WampRealm

    def rate_limiter(self, role: str | None = None) -> MessageRateLimiter | None:
        """
        A new connection's inbound message budget, or C{None} without a
        limit: its C{role}'s rate (none when 0) when the role sets one,
        else the server's (C{--rate-limit}, C{--rate-burst}).
        """
        limits = self.limits
        rate, burst = limits.message_rate, limits.message_burst
        if role is not None:
            configured = self.realm.access.role(role)
            if configured.rate is not None:
                rate = configured.rate
                burst = configured.burst if configured.burst is not None else max(1, int(rate * 2))
        if rate <= 0:
            return None
        return MessageRateLimiter(rate, burst, self.router.clock)

    @property
    def token_role(self) -> str:
        """
        The role of token holders, which every JSON-dialect connection is
        (with C{--auth none}, every client is trusted as one).
        """
        return self.realm.config.token_role

    def allows(self, uri: str, action: str) -> bool:
        """
        Whether a JSON-dialect connection may C{action} on C{uri}.
        """
        return self.realm.access.allows(self.token_role, uri, action)
