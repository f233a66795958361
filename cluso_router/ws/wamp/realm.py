"""
Who is in the WAMP realm: the sessions that joined it, by WAMP session id,
and the procedures WAMP callees registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from cluso_router.router.router import CLOSE_GOING_AWAY
from cluso_router.ws.session import Session
from cluso_router.ws.wamp.codec import random_id

if TYPE_CHECKING:
    from cluso_router.ws.wamp.rpc import Registration

DEFAULT_REALM: Final = "cluso"


class WampSession(Session):
    """
    A connection speaking WAMP: the ordered, bounded send path of every
    session, plus who the client joined as.

    @ivar wamp_id: the WAMP session id while joined, else C{None}.
    @ivar farewell: the GOODBYE frame sent before the connection is closed
        for a server shutdown, while joined.
    """

    wamp_id: int | None = None
    authid: str | None = None
    authrole: str | None = None
    farewell: bytes | None = None

    def close(self, code: int, reason: str) -> None:
        if code == CLOSE_GOING_AWAY and self.farewell is not None:
            self.deliver(self.farewell)
        super().close(code, reason)


class WampRealm:
    """
    One realm of one node; every WAMP connection of a factory joins it.
    """

    def __init__(self, name: str = DEFAULT_REALM) -> None:
        self.name = name
        self.sessions: dict[int, WampSession] = {}
        self.callees: dict[str, Registration] = {}

    def join(self, session: WampSession) -> int:
        """
        Give C{session} a fresh random WAMP session id.
        """
        wamp_id = random_id()
        while wamp_id in self.sessions:
            wamp_id = random_id()
        self.sessions[wamp_id] = session
        session.wamp_id = wamp_id
        return wamp_id

    def leave(self, session: WampSession) -> None:
        if session.wamp_id is not None:
            self.sessions.pop(session.wamp_id, None)
            session.wamp_id = None
