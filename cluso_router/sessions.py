"""
Browser sessions: what the sign-in cookie carries instead of the token.

Browsers send a host's cookies to every port on it, so whatever a cookie
holds reaches any other server the developer runs on C{localhost}. The
cookie therefore holds a random session id that stands for the token on
this server only: it expires, the table of live ids is bounded, and every
id is forgotten when the server stops, so a leaked cookie never reveals
the token and is useless after a restart.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from typing import Any, Final

#: Seconds a browser session lasts (the cookie's C{Max-Age}).
DEFAULT_SESSION_LIFETIME: Final = 12 * 60 * 60.0
#: Browser sessions kept at once; signing in beyond it ends the oldest.
DEFAULT_MAX_SESSIONS: Final = 1024


class SessionTable:
    """
    Live browser session ids, oldest first, each with its expiry time.

    Only a digest of each id is kept, so the table itself (in a core dump,
    say) holds nothing a cookie could be made from.

    @param clock: anything with C{seconds()} (a reactor, C{task.Clock});
        the global reactor when not given.
    """

    def __init__(
        self,
        clock: Any = None,
        lifetime: float = DEFAULT_SESSION_LIFETIME,
        capacity: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if lifetime <= 0:
            raise ValueError("session lifetime must be positive")
        if capacity < 1:
            raise ValueError("max sessions must be at least 1")
        self.lifetime = lifetime
        self.capacity = capacity
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._expiries: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._expiries)

    def open(self) -> str:
        """
        A new session id, valid for L{lifetime} seconds; the oldest session
        ends if the table is full.
        """
        self._expire()
        while len(self._expiries) >= self.capacity:
            self._expiries.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        self._expiries[_digest(session_id)] = self._clock.seconds() + self.lifetime
        return session_id

    def valid(self, session_id: str) -> bool:
        """
        Whether C{session_id} is a live session of this table.
        """
        self._expire()
        return _digest(session_id) in self._expiries

    def revoke_all(self) -> None:
        """
        End every session (the server is stopping).
        """
        self._expiries.clear()

    def _expire(self) -> None:
        # Every session lives equally long, so insertion order is expiry order.
        now = self._clock.seconds()
        while self._expiries:
            digest, expiry = next(iter(self._expiries.items()))
            if expiry > now:
                return
            del self._expiries[digest]


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()
