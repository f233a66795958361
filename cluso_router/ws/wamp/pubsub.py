"""
Publish and subscribe for one WAMP session: its SUBSCRIBE, UNSUBSCRIBE and
PUBLISH on the router's channels, which are WAMP topics of the same name.
(The realm-wide broker is the router itself, shared with the JSON dialect.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from autobahn.wamp import message
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.interfaces import IPublisher, ISession
from cluso_router.router.event import InvalidEvent
from cluso_router.router.router import Router
from cluso_router.router.subscriptions import Match
from cluso_router.ws.json.codec import ProtocolError, check_channel
from cluso_router.ws.wamp.codec import random_id, value_of
from cluso_router.ws.wamp.realm import WampRealm, WampSession

Send = Callable[[Any], None]


def topic_problem(topic: str, match: Match) -> str | None:
    """
    Why C{topic} cannot be used as a channel (or pattern) under C{match}, or
    C{None}. An exact topic has no empty components.
    """
    try:
        check_channel(topic)
    except ProtocolError as e:
        return e.message
    if match == "exact" and "" in topic.split("."):
        return f"topic {topic!r} has an empty component"
    return None


class SessionPubSub:
    """
    Publish and subscribe for one WAMP session.
    """

    log = Logger()

    def __init__(
        self,
        session: WampSession,
        router: Router,
        publisher: IPublisher,
        realm: WampRealm,
        max_subscriptions: int,
        send: Send,
    ) -> None:
        self._session = session
        self._router = router
        self._publisher = publisher
        self._realm = realm
        self._max_subscriptions = max_subscriptions
        self._send = send
        self._subscriptions: dict[int, tuple[str, Match]] = {}

    def _error(self, request_type: int, request: int, uri: str, text: str) -> None:
        self._send(message.Error(request_type, request, uri, args=[text]))

    def subscribe(self, msg: message.Subscribe) -> None:
        """
        Subscribe; a session subscribing again to the same topic and match
        gets the same subscription id.
        """
        match: Match = msg.match or "exact"
        problem = topic_problem(msg.topic, match)
        if problem is not None:
            self._error(msg.MESSAGE_TYPE, msg.request, "wamp.error.invalid_uri", problem)
            return
        router = self._router
        added = router.subscribe(self._session, msg.topic, match)
        if added and router.subscription_count(self._session) > self._max_subscriptions:
            router.unsubscribe(self._session, msg.topic, match)
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "cluso.error.too_many_subscriptions",
                f"a connection may hold at most {self._max_subscriptions} subscriptions",
            )
            return
        subscription = router.subscription(msg.topic, match)
        assert subscription is not None
        self._subscriptions[subscription.id] = (msg.topic, match)
        self._send(message.Subscribed(msg.request, subscription.id))

    def unsubscribe(self, msg: message.Unsubscribe) -> None:
        held = self._subscriptions.pop(msg.subscription, None)
        if held is None:
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.no_such_subscription",
                f"no subscription {msg.subscription} on this session",
            )
            return
        self._router.unsubscribe(self._session, *held)
        self._send(message.Unsubscribed(msg.request))

    def publish(self, msg: message.Publish) -> None:
        """
        Publish the payload's value (L{value_of}) through the node's
        publisher; answer with PUBLISHED, or ERROR, only when asked to
        acknowledge.
        """
        topic = msg.topic
        problem = topic_problem(topic, "exact")
        if problem is not None:
            self._refuse(msg, "wamp.error.invalid_uri", problem)
            return
        if self._router.claims.is_claimed(topic):
            self._refuse(
                msg, "wamp.error.not_authorized", f"topic {topic!r} is published by the server only"
            )
            return
        if msg.payload is not None:
            self._refuse(
                msg, "wamp.error.invalid_argument", "transparent payloads are not supported"
            )
            return
        data = value_of(msg.args, msg.kwargs)
        exclude, eligible = self._receivers(msg)
        if (exclude or eligible is not None) and self._publisher is self._router:
            d = maybeDeferred(self._router.publish, topic, data, exclude, eligible)
        else:
            d = maybeDeferred(self._publisher.publish, topic, data)
        if msg.acknowledge:
            d.addCallbacks(
                lambda _: self._send(message.Published(msg.request, random_id())),
                self._publish_failed,
                errbackArgs=(msg,),
            )
        else:
            d.addErrback(self._publish_failed, msg)

    def _refuse(self, msg: message.Publish, uri: str, text: str) -> None:
        if msg.acknowledge:
            self._error(msg.MESSAGE_TYPE, msg.request, uri, text)

    def _publish_failed(self, failure: Failure, msg: message.Publish) -> None:
        if failure.check(InvalidEvent):
            self._refuse(msg, "wamp.error.invalid_argument", failure.getErrorMessage())
            return
        self.log.failure(
            "Publishing on {topic} for {connection_id} failed",
            failure,
            topic=msg.topic,
            connection_id=self._session.connection_id,
        )
        self._refuse(msg, "cluso.error.publish_failed", "the event could not be published")

    def _receivers(self, msg: message.Publish) -> tuple[set[ISession], set[ISession] | None]:
        """
        The sessions this publication's exclusion and eligibility options
        (by WAMP session id, authid or authrole) leave out, and those it is
        limited to (C{None}: no limit).
        """
        everyone = self._realm.sessions.values()
        by_id: Mapping[int, ISession] = self._realm.sessions
        excluded: set[ISession] = set()
        if msg.exclude_me is not False and self._subscriptions:
            excluded.add(self._session)
        excluded.update(by_id[i] for i in msg.exclude or () if i in by_id)
        excluded.update(_having(everyone, "authid", msg.exclude_authid) or ())
        excluded.update(_having(everyone, "authrole", msg.exclude_authrole) or ())
        by_session_id: set[ISession] | None = (
            None if msg.eligible is None else {by_id[i] for i in msg.eligible if i in by_id}
        )
        eligible: set[ISession] | None = None
        for allowed in (
            by_session_id,
            _having(everyone, "authid", msg.eligible_authid),
            _having(everyone, "authrole", msg.eligible_authrole),
        ):
            if allowed is not None:
                eligible = allowed if eligible is None else eligible & allowed
        return excluded, eligible

    def leave(self) -> None:
        for topic, match in self._subscriptions.values():
            self._router.unsubscribe(self._session, topic, match)
        self._subscriptions.clear()


def _having(
    sessions: Iterable[WampSession], attribute: str, values: Collection[str] | None
) -> set[ISession] | None:
    """
    The sessions whose C{attribute} is one of C{values}; C{None} when no
    values were given.
    """
    if values is None:
        return None
    wanted = set(values)
    return {s for s in sessions if getattr(s, attribute) in wanted}
