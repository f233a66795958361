"""
The limits one client is held to, and the per-connection message rate
limiter that enforces the rate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Final

from twisted.internet.interfaces import IReactorTime

from cluso_router.ws.session import DEFAULT_MAX_QUEUE_BYTES

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """
    Every limit of the server, with its default.

    @ivar max_connections: WebSocket connections at once; more get HTTP 503.
    @ivar max_subscriptions: subscriptions one connection may hold.
    @ivar max_message_bytes: largest inbound message; larger closes with 1009.
    @ivar max_queue_bytes: bytes queued for a client that does not read;
        more closes it with 4008.
    @ivar message_rate: inbound messages per second per connection (0: no limit).
    @ivar message_burst: messages a connection may send at once above the rate.
    @ivar handshake_timeout: seconds a client has to finish the opening handshake.
    """

    max_connections: int = 10_000
    max_subscriptions: int = 128
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    message_rate: float = 1000.0
    message_burst: int = 2000
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value < 0 or (value == 0 and field.name != "message_rate"):
                raise ValueError(f"{field.name.replace('_', '-')} must be positive, not {value}")


class Admission(enum.Enum):
    ACCEPT = "accept"
    #: Over the rate: answer C{rate_limited} and drop the message.
    REFUSE = "refuse"
    #: Far over the rate for long: close the connection.
    CLOSE = "close"


class TokenBucket:
    """
    C{burst} tokens, refilled at C{rate} per second of C{clock} time.
    """

    __slots__ = ("_clock", "_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.seconds()

    def take(self) -> bool:
        """
        Spend one token if there is one.
        """
        now = self._clock.seconds()
        tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class MessageRateLimiter:
    """
    A connection's inbound message budget.

    Messages within C{rate} (plus a C{burst}) are accepted. Each one beyond
    is refused and spends from a second bucket of the same size and rate;
    once that one is empty too, which takes sending at more than twice the
    rate for a while, the connection is to be closed.
    """

    __slots__ = ("_allowed", "_excess")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self._allowed = TokenBucket(rate, burst, clock)
        self._excess = TokenBucket(rate, burst, clock)

    def admit(self) -> Admission:
        if self._allowed.take():
            return Admission.ACCEPT
        if self._excess.take():
            return Admission.REFUSE
        return Admission.CLOSE
