"""
Who is in the WAMP realm: the sessions that joined it, by WAMP session id,
and the procedures WAMP callees registered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Final

from zope.interface import implementer

from cluso_router.interfaces import IAudienceResolver, ISession
from cluso_router.router.event import Audience
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


@implementer(IAudienceResolver)
class WampRealm:
    """
    One realm of one node; every WAMP connection of a factory joins it.
    It resolves the WAMP identities a publication names to its sessions.
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

    def resolve(self, audience: Audience) -> tuple[set[ISession], set[ISession] | None]:
        """
        The sessions C{audience} leaves out and, when it limits delivery,
        those it limits it to; JSON-dialect connections have no WAMP
        identity, so no exclusion names them and any limit leaves them out.
        """
        sessions = self.sessions
        everyone = sessions.values()
        excluded: set[ISession] = {sessions[i] for i in audience.exclude if i in sessions}
        excluded.update(_having(everyone, "authid", audience.exclude_authid) or ())
        excluded.update(_having(everyone, "authrole", audience.exclude_authrole) or ())
        by_id: set[ISession] | None = (
            None
            if audience.eligible is None
            else {sessions[i] for i in audience.eligible if i in sessions}
        )
        eligible: set[ISession] | None = None
        for allowed in (
            by_id,
            _having(everyone, "authid", audience.eligible_authid),
            _having(everyone, "authrole", audience.eligible_authrole),
        ):
            if allowed is not None:
                eligible = allowed if eligible is None else eligible & allowed
        return excluded, eligible


def _having(
    sessions: Iterable[WampSession], attribute: str, values: Collection[str] | None
) -> set[ISession] | None:
    """
    The sessions whose C{attribute} is one of C{values}; C{None} when no
    values were given.
    """
    if values is None:
        return None
    found: set[ISession] = {s for s in sessions if getattr(s, attribute) in values}
    return found
