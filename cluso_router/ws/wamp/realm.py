"""
Who is in the WAMP realm: the sessions that joined it, by WAMP session id,
who each joined as and what its client can do; the realm's dealer; and
the meta events the router publishes about them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from cluso_router._time import iso_timestamp
from cluso_router.interfaces import IAudienceResolver, IPublisher, ISession
from cluso_router.router.event import Audience, Extras
from cluso_router.router.payload import data_of
from cluso_router.router.router import Router
from cluso_router.ws.wamp.codec import random_id
from cluso_router.ws.wamp.config import WampConfig
from cluso_router.ws.wamp.dealer import Dealer
from cluso_router.ws.wamp.meta import MetaApi
from cluso_router.ws.wamp.session import WampSession

#: Seconds a connection has to join (HELLO, and authentication if any).
HELLO_TIMEOUT: Final = 5.0
#: Connections that may be joining at once; more are refused at their
#: handshake.
MAX_UNJOINED: Final = 64


@implementer(IAudienceResolver)
class WampRealm:
    """
    One realm of one node; every WAMP connection of its endpoints (WebSocket
    and RawSocket) joins it. It resolves the WAMP identities a publication
    names to its sessions, and publishes the meta events.

    @ivar publisher: where meta events and testaments are published (the
        router, or a backplane in front of it).
    """

    log = Logger()

    def __init__(
        self,
        router: Router,
        publisher: IPublisher | None = None,
        config: WampConfig | None = None,
        wallclock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config if config is not None else WampConfig()
        self.access = self.config.access
        self.name = self.config.realm
        #: Connections that have not joined yet (HELLO or authentication
        #: pending): at most L{max_unjoined}, each for L{hello_timeout}.
        self.unjoined = 0
        self.max_unjoined = MAX_UNJOINED
        self.hello_timeout = HELLO_TIMEOUT
        self.router = router
        self.publisher: IPublisher = publisher if publisher is not None else router
        self.sessions: dict[int, WampSession] = {}
        self._wallclock = wallclock
        self.dealer = Dealer(self)
        self.dealer.meta.update(MetaApi(self).procedures())
        router.audience = self
        router.procedures.remote = self.dealer

    def admits_unjoined(self) -> bool:
        """
        Whether another connection may start joining.
        """
        return self.unjoined < self.max_unjoined

    def authorize(self, session: WampSession, uri: str, action: str) -> bool:
        """
        Whether C{session} may C{action} (C{publish}, C{subscribe}, C{call},
        C{register}) on C{uri}, by its role.
        """
        return self.access.allows(session.authrole, uri, action)

    def discloses(self, authrole: str | None, what: str) -> bool:
        """
        Whether sessions of C{authrole} are always identified as C{what}
        (C{caller}, C{publisher}).
        """
        return self.access.discloses(authrole, what)

    def now(self) -> str:
        """
        The current time as the meta API writes it.
        """
        if self._wallclock is not None:
            return iso_timestamp(self._wallclock())
        return iso_timestamp(self.router.clock.seconds())

    def new_session_id(self) -> int:
        """
        A random WAMP session id no session has.
        """
        wamp_id = random_id()
        while wamp_id in self.sessions:
            wamp_id = random_id()
        return wamp_id

    def join(self, session: WampSession, wamp_id: int | None = None) -> int:
        """
        Enter C{session} under C{wamp_id} (a fresh one by default).
        """
        if wamp_id is None or wamp_id in self.sessions:
            wamp_id = self.new_session_id()
        self.sessions[wamp_id] = session
        session.wamp_id = wamp_id
        session.testaments = {}
        return wamp_id

    def leave(self, session: WampSession) -> None:
        if session.wamp_id is not None:
            self.sessions.pop(session.wamp_id, None)
            session.wamp_id = None

    def meta_event(self, topic: str, *args: Any, **kwargs: Any) -> None:
        """
        Publish a meta event; one that fails (Redis unreachable) is logged.
        """
        extras = Extras(args=list(args), kwargs=kwargs or None)
        d = maybeDeferred(self.publisher.publish, topic, data_of(args, kwargs), extras)
        d.addErrback(
            lambda failure: self.log.warn(
                "Meta event {topic} was not published: {reason}",
                topic=topic,
                reason=failure.getErrorMessage(),
            )
        )

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
