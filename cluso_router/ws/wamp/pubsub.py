"""
Publish and subscribe for one WAMP session: its SUBSCRIBE, UNSUBSCRIBE and
PUBLISH on the router's channels, which are WAMP topics of the same name.
(The realm-wide broker is the router itself, shared with the JSON dialect.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from autobahn.wamp import message
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.router.event import Audience, DeliveryReport, Extras, InvalidEvent
from cluso_router.router.payload import data_of
from cluso_router.router.subscriptions import Match, Subscription
from cluso_router.ws.json.codec import ProtocolError, check_channel
from cluso_router.ws.wamp.codec import ProtocolViolation, passthru_options
from cluso_router.ws.wamp.session import RESERVED_PREFIX, WampSession

if TYPE_CHECKING:
    from cluso_router.ws.wamp.realm import WampRealm

Send = Callable[[Any], None]
UNSUBSCRIBED: Final = 35
_EVERYONE: Final = Audience()


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
        self, session: WampSession, realm: WampRealm, max_subscriptions: int, send: Send
    ) -> None:
        self._session = session
        self._realm = realm
        self._router = realm.router
        self._max_subscriptions = max_subscriptions
        self._send = send
        self._subscriptions: dict[int, tuple[str, Match]] = {}

    def _error(self, request_type: int, request: int, uri: str, text: str) -> None:
        self._send(message.Error(request_type, request, uri, args=[text]))

    def subscribe(self, msg: message.Subscribe, options: Mapping[str, Any]) -> None:
        """
        Subscribe; a session subscribing again to the same topic and match
        gets the same subscription id. Meta events follow the answer.
        """
        match: Match = msg.match or "exact"
        problem = topic_problem(msg.topic, match)
        if problem is not None:
            self._error(msg.MESSAGE_TYPE, msg.request, "wamp.error.invalid_uri", problem)
            return
        if not self._realm.authorize(self._session, msg.topic, "subscribe"):
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.not_authorized",
                f"not authorized to subscribe to {msg.topic!r}",
            )
            return
        router = self._router
        created = router.subscription(msg.topic, match) is None
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
        if added and not msg.topic.startswith(RESERVED_PREFIX):
            session_id = self._session.wamp_id
            if created:
                self._realm.meta_event(
                    "wamp.subscription.on_create", session_id, subscription_details(subscription)
                )
            self._realm.meta_event("wamp.subscription.on_subscribe", session_id, subscription.id)

    def unsubscribe(self, msg: message.Unsubscribe, options: Mapping[str, Any]) -> None:
        if msg.subscription not in self._subscriptions:
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.no_such_subscription",
                f"no subscription {msg.subscription} on this session",
            )
            return
        self._send(message.Unsubscribed(msg.request))
        self._drop(msg.subscription)

    def _drop(self, subscription_id: int) -> None:
        topic, match = self._subscriptions.pop(subscription_id)
        self._router.unsubscribe(self._session, topic, match)
        if topic.startswith(RESERVED_PREFIX):
            return
        session_id = self._session.wamp_id
        self._realm.meta_event("wamp.subscription.on_unsubscribe", session_id, subscription_id)
        if self._router.subscription(topic, match) is None:
            self._realm.meta_event("wamp.subscription.on_delete", session_id, subscription_id)

    def revoke(self, subscription_id: int, reason: str) -> bool:
        """
        End this session's subscription C{subscription_id} from the router's
        side; the client is told when it announced subscription revocation.
        C{False} when it holds no such subscription.
        """
        if subscription_id not in self._subscriptions:
            return False
        self._drop(subscription_id)
        if self._session.supports("subscriber", "subscription_revocation"):
            self._send([UNSUBSCRIBED, 0, {"subscription": subscription_id, "reason": reason}])
        return True

    def publish(self, msg: message.Publish, options: Mapping[str, Any]) -> None:
        """
        Publish the payload as given through the node's publisher (its JSON
        value, L{data_of}, for the JSON dialect); answer with PUBLISHED,
        or ERROR, only when asked to acknowledge.

        @raise ProtocolViolation: for passthru options from a publisher that
            did not announce the feature.
        """
        topic = msg.topic
        problem = topic_problem(topic, "exact")
        if problem is not None:
            self._refuse(msg, "wamp.error.invalid_uri", problem)
            return
        if self._router.claims.is_claimed(topic) or topic.startswith(RESERVED_PREFIX):
            self._refuse(
                msg, "wamp.error.not_authorized", f"topic {topic!r} is published by the server only"
            )
            return
        if not self._realm.authorize(self._session, topic, "publish"):
            self._refuse(
                msg, "wamp.error.not_authorized", f"not authorized to publish to {topic!r}"
            )
            return
        self.publish_as(msg, options, self._session).addCallbacks(
            self._published, self._publish_failed, (msg,), None, (msg,)
        )

    def publish_as(
        self, msg: message.Publish, options: Mapping[str, Any], publisher: WampSession
    ) -> Any:
        """
        Publish C{msg} as C{publisher} published it; a Deferred of the
        delivery report.
        """
        passthru = passthru_options(options)
        if "ppt_scheme" in passthru and not publisher.supports(
            "publisher", "payload_passthru_mode"
        ):
            raise ProtocolViolation("payload passthru mode was not announced by this publisher")
        details = dict(passthru)
        if options.get("disclose_me") is True or self._realm.discloses(
            publisher.authrole, "publisher"
        ):
            details["publisher"] = publisher.wamp_id
            details["publisher_authid"] = publisher.authid
            details["publisher_authrole"] = publisher.authrole
        raw = msg.payload if isinstance(msg.payload, bytes) else None
        args = list(msg.args or ())
        extras = Extras(
            args=args,
            kwargs=msg.kwargs or None,
            details=details or None,
            payload=raw,
            audience=self._audience(msg, publisher),
        )
        data = data_of([raw] if raw is not None else args, msg.kwargs)
        return maybeDeferred(self._realm.publisher.publish, msg.topic, data, extras)

    def _published(self, report: DeliveryReport, msg: message.Publish) -> None:
        if msg.acknowledge:
            self._send(message.Published(msg.request, report.publication))

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

    def _audience(self, msg: message.Publish, publisher: WampSession) -> Audience | None:
        """
        Whom the publication is for: its exclusion and eligibility options
        (by WAMP session id, authid or authrole), and the publisher itself
        unless it asked for its own events (C{exclude_me} false); C{None}
        when that is everyone. (A publisher without subscriptions gets none
        of its events anyway, so it is not named.)
        """
        exclude = set(msg.exclude or ())
        if (
            msg.exclude_me is not False
            and publisher is self._session
            and self._subscriptions
            and publisher.wamp_id is not None
        ):
            exclude.add(publisher.wamp_id)
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
        for subscription_id in list(self._subscriptions):
            self._drop(subscription_id)


def subscription_details(subscription: Subscription) -> dict[str, Any]:
    """
    What the subscription meta API says about a subscription.
    """
    return {
        "id": subscription.id,
        "created": subscription.created,
        "uri": subscription.pattern,
        "match": subscription.match,
    }
