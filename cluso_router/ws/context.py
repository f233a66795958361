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

    def rate_limiter(self) -> MessageRateLimiter | None:
        """
        A new connection's inbound message budget, or C{None} without a limit.
        """
        limits = self.limits
        if limits.message_rate <= 0:
            return None
        return MessageRateLimiter(limits.message_rate, limits.message_burst, self.router.clock)
