"""
Publish and subscribe for one WAMP session: its SUBSCRIBE, UNSUBSCRIBE and
PUBLISH on the router's channels, which are WAMP topics of the same name.
(The realm-wide broker is the router itself, shared with the JSON dialect.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.wamp import message
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.interfaces import IPublisher
from cluso_router.router.event import Audience, Extras, InvalidEvent
from cluso_router.router.payload import data_of
from cluso_router.router.router import Router
from cluso_router.router.subscriptions import Match
from cluso_router.ws.json.codec import ProtocolError, check_channel
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
        args = list(msg.args or ())
        extras = Extras(args=args, kwargs=msg.kwargs or None, audience=self._audience(msg))
        d = maybeDeferred(self._publisher.publish, topic, data_of(args, msg.kwargs), extras)
        if msg.acknowledge:
            d.addCallbacks(
                lambda report: self._send(message.Published(msg.request, report.publication)),
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

    def _audience(self, msg: message.Publish) -> Audience | None:
        """
        Whom the publication is for: its exclusion and eligibility options
        (by WAMP session id, authid or authrole), and the publisher itself
        unless it asked for its own events (C{exclude_me} false); C{None}
        when that is everyone.
        """
        exclude = set(msg.exclude or ())
        if msg.exclude_me is not False and self._subscriptions:
            assert self._session.wamp_id is not None
            exclude.add(self._session.wamp_id)
        audience = Audience(
            frozenset(exclude),
            frozenset(msg.exclude_authid or ()),
            frozenset(msg.exclude_authrole or ()),
            None if msg.eligible is None else frozenset(msg.eligible),
            None if msg.eligible_authid is None else frozenset(msg.eligible_authid),
            None if msg.eligible_authrole is None else frozenset(msg.eligible_authrole),
        )
        return None if audience == _EVERYONE else audience

    def leave(self) -> None:
        for topic, match in self._subscriptions.values():
            self._router.unsubscribe(self._session, topic, match)
        self._subscriptions.clear()


_EVERYONE = Audience()
