"""
The WAMP meta API: procedures under C{wamp.session.*},
C{wamp.subscription.*} and C{wamp.registration.*} answered by the realm
itself (the meta events are published where things happen: the handler,
L{cluso_router.ws.wamp.pubsub}, L{cluso_router.ws.wamp.dealer}), the
testament procedures, and event history (C{wamp.subscription.get_events})
served from the channels' history.

Subscriptions to topics under C{wamp.} are the router's own business: the
meta API neither lists nor describes them, and emits no events for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from autobahn.wamp import message
from twisted.internet.defer import Deferred, maybeDeferred

from cluso_router.interfaces import IBackplane
from cluso_router.router.event import Event
from cluso_router.router.history import Position, Recovery
from cluso_router.router.payload import arguments_of
from cluso_router.router.subscriptions import MATCHES, Subscription
from cluso_router.ws.wamp.dealer import Call, DealerError, Payload
from cluso_router.ws.wamp.pubsub import subscription_details, topic_problem
from cluso_router.ws.wamp.session import RESERVED_PREFIX, WampSession

if TYPE_CHECKING:
    from cluso_router.ws.wamp.realm import WampRealm

#: Testaments one session may leave, per scope.
MAX_TESTAMENTS: Final = 32
TESTAMENT_SCOPES: Final = ("detached", "destroyed")
#: Events C{wamp.subscription.get_events} answers with at most.
MAX_HISTORY_EVENTS: Final = 1000
DEFAULT_HISTORY_EVENTS: Final = 100
#: PUBLISH options a testament may carry (others make no sense for one).
TESTAMENT_OPTIONS: Final = (
    "exclude",
    "exclude_authid",
    "exclude_authrole",
    "eligible",
    "eligible_authid",
    "eligible_authrole",
)

Procedure = Callable[[Call], Any]


def _argument(call: Call, index: int, name: str, kind: type | tuple[type, ...]) -> Any:
    """
    Positional argument C{index} (or keyword argument C{name}) of C{call}.

    @raise DealerError: when it is missing or of the wrong type.
    """
    args, kwargs = call.payload.args, call.payload.kwargs or {}
    value = args[index] if len(args) > index else kwargs.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise DealerError(
            "wamp.error.invalid_argument", f"{call.procedure} needs {name} as argument {index + 1}"
        )
    return value


def _optional(call: Call, index: int, name: str, default: Any = None) -> Any:
    args, kwargs = call.payload.args, call.payload.kwargs or {}
    if len(args) > index:
        return args[index]
    return (kwargs or {}).get(name, default)


def _visible(pattern: str) -> bool:
    return not pattern.startswith(RESERVED_PREFIX)


class MetaApi:
    """
    The meta procedures of one realm, installed into its dealer.
    """

    def __init__(self, realm: WampRealm) -> None:
        self._realm = realm
        self._router = realm.router

    def procedures(self) -> dict[str, Procedure]:
        return {
            "wamp.session.count": self.session_count,
            "wamp.session.list": self.session_list,
            "wamp.session.get": self.session_get,
            "wamp.session.kill": self.session_kill,
            "wamp.session.kill_by_authid": self.session_kill_by_authid,
            "wamp.session.kill_by_authrole": self.session_kill_by_authrole,
            "wamp.session.kill_all": self.session_kill_all,
            "wamp.session.add_testament": self.add_testament,
            "wamp.session.flush_testaments": self.flush_testaments,
            "wamp.subscription.list": self.subscription_list,
            "wamp.subscription.lookup": self.subscription_lookup,
            "wamp.subscription.match": self.subscription_match,
            "wamp.subscription.get": self.subscription_get,
            "wamp.subscription.list_subscribers": self.list_subscribers,
            "wamp.subscription.count_subscribers": self.count_subscribers,
            "wamp.subscription.remove_subscriber": self.remove_subscriber,
            "wamp.subscription.get_events": self.get_events,
            "wamp.registration.list": self.registration_list,
            "wamp.registration.lookup": self.registration_lookup,
            "wamp.registration.match": self.registration_match,
            "wamp.registration.get": self.registration_get,
            "wamp.registration.list_callees": self.list_callees,
            "wamp.registration.count_callees": self.count_callees,
            "wamp.registration.remove_callee": self.remove_callee,
        }

    # sessions

    def _sessions(self, call: Call) -> list[WampSession]:
        roles = _optional(call, 0, "filter_authroles")
        sessions = list(self._realm.sessions.values())
        if isinstance(roles, list):
            sessions = [s for s in sessions if s.authrole in roles]
        return sessions

    def session_count(self, call: Call) -> int:
        return len(self._sessions(call))

    def session_list(self, call: Call) -> list[int]:
        return [s.wamp_id for s in self._sessions(call) if s.wamp_id is not None]

    def _session(self, call: Call, index: int = 0, name: str = "session") -> WampSession:
        session_id = _argument(call, index, name, int)
        session = self._realm.sessions.get(session_id)
        if session is None or session is call.caller:
            raise DealerError(
                "wamp.error.no_such_session", f"no session with ID {session_id} exists here"
            )
        return session

    def session_get(self, call: Call) -> dict[str, Any]:
        session_id = _argument(call, 0, "session", int)
        session = self._realm.sessions.get(session_id)
        if session is None:
            raise DealerError(
                "wamp.error.no_such_session", f"no session with ID {session_id} exists here"
            )
        return session.details(self._realm.name)

    def _kill(self, call: Call, sessions: Iterable[WampSession]) -> int:
        kwargs = call.payload.kwargs or {}
        reason = kwargs.get("reason", "wamp.close.normal")
        text = kwargs.get("message")
        if not isinstance(reason, str) or topic_problem(reason, "exact") is not None:
            raise DealerError("wamp.error.invalid_uri", "reason must be a URI")
        killed = 0
        for session in list(sessions):
            if session is not call.caller and session.peer is not None:
                session.peer.kill(reason, text if isinstance(text, str) else None)
                killed += 1
        return killed

    def session_kill(self, call: Call) -> None:
        self._kill(call, [self._session(call)])

    def session_kill_by_authid(self, call: Call) -> int:
        authid = _argument(call, 0, "authid", str)
        return self._kill(call, [s for s in self._realm.sessions.values() if s.authid == authid])

    def session_kill_by_authrole(self, call: Call) -> int:
        authrole = _argument(call, 0, "authrole", str)
        return self._kill(
            call, [s for s in self._realm.sessions.values() if s.authrole == authrole]
        )

    def session_kill_all(self, call: Call) -> int:
        return self._kill(call, self._realm.sessions.values())

    # testaments

    def _scope(self, call: Call) -> str:
        scope = (call.payload.kwargs or {}).get("scope", "destroyed")
        if scope not in TESTAMENT_SCOPES:
            raise DealerError(
                "wamp.error.testament_error", "scope must be 'detached' or 'destroyed'"
            )
        return str(scope)

    def add_testament(self, call: Call) -> None:
        """
        Keep an event to publish, as the caller, when its session ends.
        """
        caller = _caller(call)
        topic = _argument(call, 0, "topic", str)
        args = _optional(call, 1, "args") or []
        kwargs = _optional(call, 2, "kwargs") or None
        options = (call.payload.kwargs or {}).get("publish_options") or {}
        scope = self._scope(call)
        problem = topic_problem(topic, "exact")
        if problem is not None:
            raise DealerError("wamp.error.invalid_uri", problem)
        if (
            topic.startswith(RESERVED_PREFIX)
            or self._router.claims.is_claimed(topic)
            or not self._realm.authorize(caller, topic, "publish")
        ):
            raise DealerError(
                "wamp.error.not_authorized", f"not authorized to publish to {topic!r}"
            )
        if not isinstance(args, list) or not isinstance(kwargs, dict | None):
            raise DealerError("wamp.error.invalid_argument", "args is a list, kwargs an object")
        if not isinstance(options, dict) or set(options) - set(TESTAMENT_OPTIONS):
            raise DealerError(
                "wamp.error.invalid_argument",
                f"publish_options may name {', '.join(TESTAMENT_OPTIONS)}",
            )
        try:
            publish = message.Publish(1, topic, args=args, kwargs=kwargs, **options)
        except (AssertionError, TypeError, ValueError) as e:
            raise DealerError("wamp.error.invalid_argument", f"bad publish_options: {e}") from None
        testaments = caller.testaments.setdefault(scope, [])
        if len(testaments) >= MAX_TESTAMENTS:
            raise DealerError(
                "wamp.error.testament_error",
                f"a session may leave at most {MAX_TESTAMENTS} testaments per scope",
            )
        testaments.append(publish)

    def flush_testaments(self, call: Call) -> None:
        _caller(call).testaments.pop(self._scope(call), None)

    # subscriptions

    def _subscription(self, call: Call) -> Subscription:
        subscription_id = _argument(call, 0, "subscription", int)
        for subscription in self._router.subscriptions():
            if subscription.id == subscription_id and _visible(subscription.pattern):
                return subscription
        raise DealerError(
            "wamp.error.no_such_subscription", f"no subscription {subscription_id} exists here"
        )

    def subscription_list(self, call: Call) -> dict[str, list[int]]:
        listed: dict[str, list[int]] = {match: [] for match in MATCHES}
        session_id = _optional(call, 0, "session")
        for subscription in self._router.subscriptions():
            if not _visible(subscription.pattern):
                continue
            if session_id is not None and not any(
                getattr(s, "wamp_id", None) == session_id for s in subscription.sessions
            ):
                continue
            listed[subscription.match].append(subscription.id)
        return listed

    def subscription_lookup(self, call: Call) -> int | None:
        topic = _argument(call, 0, "topic", str)
        options = _optional(call, 1, "options") or {}
        match = options.get("match", "exact") if isinstance(options, dict) else "exact"
        subscription = self._router.subscription(topic, match) if match in MATCHES else None  # type: ignore[arg-type]
        if subscription is None or not _visible(subscription.pattern):
            return None
        return subscription.id

    def subscription_match(self, call: Call) -> list[int] | None:
        topic = _argument(call, 0, "topic", str)
        found = [s.id for s in self._router.matching_subscriptions(topic) if _visible(s.pattern)]
        return found or None

    def subscription_get(self, call: Call) -> dict[str, Any]:
        return subscription_details(self._subscription(call))

    def list_subscribers(self, call: Call) -> list[int]:
        return [
            wamp_id
            for s in self._subscription(call).sessions
            if (wamp_id := getattr(s, "wamp_id", None)) is not None
        ]

    def count_subscribers(self, call: Call) -> int:
        return len(self._subscription(call).sessions)

    def remove_subscriber(self, call: Call) -> None:
        subscription = self._subscription(call)
        session = self._realm.sessions.get(_argument(call, 1, "subscriber_id", int))
        reason = _optional(call, 2, "reason") or "wamp.error.subscription_revoked"
        if (
            session is None
            or session.peer is None
            or not session.peer.pubsub.revoke(subscription.id, str(reason))
        ):
            raise DealerError("wamp.error.no_such_subscription", "that session does not hold it")

    def get_events(self, call: Call) -> Deferred[Payload]:
        """
        The events a subscription was (or would have been) delivered, from
        the channels' history: the newest C{limit} (100 by default, at most
        1000) in order of occurrence, or newest first with C{reverse};
        filtered as the specification says. Events published to listed
        sessions are never answered; those limited to (or excluding) authids
        and authroles only when the caller passes.
        """
        caller = _caller(call)
        subscription = self._subscription(call)
        if not self._realm.authorize(caller, subscription.pattern, "subscribe"):
            raise DealerError(
                "wamp.error.not_authorized", "not authorized to subscribe to this topic"
            )
        query = HistoryQuery.of(call)
        return maybeDeferred(self._history, subscription).addCallback(
            lambda events: Payload([query.answer(subscription, events, caller)])
        )

    def _history(self, subscription: Subscription) -> Any:
        publisher = self._realm.publisher
        backplane = publisher if IBackplane.providedBy(publisher) else self._router
        if subscription.match == "exact":
            position = backplane.position(subscription.pattern)
            return (
                maybeDeferred(lambda: position)
                .addCallback(lambda p: backplane.since(subscription.pattern, 0, p.epoch))
                .addCallback(lambda recovery: list(_events_of(recovery)))
            )
        if not backplane.synchronous:
            raise DealerError(
                "wamp.error.history_unavailable",
                "pattern subscriptions have no history across nodes",
            )
        matching = {
            "prefix": lambda name: name.startswith(subscription.pattern),
            "wildcard": lambda name: _wildcard_matches(subscription.pattern, name),
        }[subscription.match]
        return self._router.history.kept(matching)

    # registrations

    def _registration(self, call: Call) -> Any:
        registration_id = _argument(call, 0, "registration", int)
        registration = self._realm.dealer.registrations.get(registration_id)
        if registration is None:
            raise DealerError(
                "wamp.error.no_such_registration",
                f"no registration {registration_id} exists here",
            )
        return registration

    def registration_list(self, call: Call) -> dict[str, list[int]]:
        session_id = _optional(call, 0, "session")
        return {
            match: [
                r.id
                for r in registrations
                if session_id is None or any(c.session.wamp_id == session_id for c in r.callees)
            ]
            for match, registrations in self._realm.dealer.by_match().items()
        }

    def registration_lookup(self, call: Call) -> int | None:
        procedure = _argument(call, 0, "procedure", str)
        options = _optional(call, 1, "options") or {}
        match = options.get("match", "exact") if isinstance(options, dict) else "exact"
        registration = (
            self._realm.dealer.lookup(procedure, match)  # type: ignore[arg-type]
            if match in MATCHES
            else None
        )
        return None if registration is None else registration.id

    def registration_match(self, call: Call) -> int | None:
        registration = self._realm.dealer.best(_argument(call, 0, "procedure", str))
        return None if registration is None else registration.id

    def registration_get(self, call: Call) -> dict[str, Any]:
        details: dict[str, Any] = self._registration(call).details()
        return details

    def list_callees(self, call: Call) -> list[int]:
        return [c.session.wamp_id for c in self._registration(call).callees]

    def count_callees(self, call: Call) -> int:
        return len(self._registration(call).callees)

    def remove_callee(self, call: Call) -> None:
        registration = self._registration(call)
        callee_id = _argument(call, 1, "callee_id", int)
        reason = _optional(call, 2, "reason") or "wamp.error.registration_revoked"
        for callee in list(registration.callees):
            if callee.session.wamp_id == callee_id:
                callee.revoke(registration, str(reason))
                self._realm.dealer.unregister(callee, registration)
                return
        raise DealerError("wamp.error.no_such_registration", "that session does not hold it")


def _caller(call: Call) -> WampSession:
    if not isinstance(call.caller, WampSession):
        raise DealerError("wamp.error.no_such_session", "only WAMP sessions may call this")
    return call.caller


def _events_of(recovery: Recovery | Position) -> list[Event]:
    return recovery.events if isinstance(recovery, Recovery) else []


def _wildcard_matches(pattern: str, topic: str) -> bool:
    wanted, given = pattern.split("."), topic.split(".")
    return len(wanted) == len(given) and all(
        not w or w == g for w, g in zip(wanted, given, strict=True)
    )


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DealerError("wamp.error.invalid_argument", "times are RFC 3339 strings")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise DealerError("wamp.error.invalid_argument", f"{value!r} is not RFC 3339") from None


class HistoryQuery:
    """
    The options of one C{wamp.subscription.get_events} call.
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        limit = kwargs.get("limit", DEFAULT_HISTORY_EVENTS)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise DealerError("wamp.error.invalid_argument", "limit is a positive integer")
        self.limit = min(limit, MAX_HISTORY_EVENTS)
        self.reverse = kwargs.get("reverse") is True
        self.topic = kwargs.get("topic")
        self.times = {
            name: _time(kwargs.get(name))
            for name in ("from_time", "after_time", "before_time", "until_time")
        }
        self.publications = {
            name: kwargs.get(name)
            for name in (
                "from_publication",
                "after_publication",
                "before_publication",
                "until_publication",
            )
        }

    @classmethod
    def of(cls, call: Call) -> HistoryQuery:
        return cls(call.payload.kwargs or {})

    def answer(
        self, subscription: Subscription, events: list[Event], caller: WampSession
    ) -> list[dict[str, Any]]:
        kept = [e for e in events if self._wanted(e, caller)]
        kept = self._by_publication(kept)
        kept = kept[-self.limit :]
        if self.reverse:
            kept.reverse()
        return [_history_item(subscription, event) for event in kept]

    def _wanted(self, event: Event, caller: WampSession) -> bool:
        if self.topic is not None and event.channel != self.topic:
            return False
        audience = event.extras.audience if event.extras is not None else None
        if audience is not None:
            if audience.exclude or audience.eligible is not None:
                return False
            if caller.authid in audience.exclude_authid or caller.authrole in (
                audience.exclude_authrole
            ):
                return False
            if audience.eligible_authid is not None and caller.authid not in (
                audience.eligible_authid
            ):
                return False
            if audience.eligible_authrole is not None and caller.authrole not in (
                audience.eligible_authrole
            ):
                return False
        if any(self.times.values()):
            when = datetime.fromisoformat(event.timestamp)
            bounds = self.times
            if bounds["from_time"] and when < bounds["from_time"]:
                return False
            if bounds["after_time"] and when <= bounds["after_time"]:
                return False
            if bounds["before_time"] and when >= bounds["before_time"]:
                return False
            if bounds["until_time"] and when > bounds["until_time"]:
                return False
        return True

    def _by_publication(self, events: list[Event]) -> list[Event]:
        ids = [event.publication for event in events]
        marks = self.publications
        start, end = 0, len(events)
        for name, shift, is_start in (
            ("from_publication", 0, True),
            ("after_publication", 1, True),
            ("before_publication", 0, False),
            ("until_publication", 1, False),
        ):
            publication = marks[name]
            if publication is None:
                continue
            if publication not in ids:
                return []
            at = ids.index(publication) + shift
            if is_start:
                start = max(start, at)
            else:
                end = min(end, at)
        return events[start:end]


def _history_item(subscription: Subscription, event: Event) -> dict[str, Any]:
    extras = event.extras
    details: dict[str, Any] = dict(extras.details or {}) if extras is not None else {}
    if subscription.match != "exact":
        details["topic"] = event.channel
    if extras is not None and extras.args is not None:
        args, kwargs = extras.args, extras.kwargs
    else:
        args, kwargs = arguments_of(event.data)
    item: dict[str, Any] = {
        "timestamp": event.timestamp,
        "subscription": subscription.id,
        "publication": event.publication,
        "details": details,
        "args": args,
    }
    if kwargs:
        item["kwargs"] = kwargs
    return item
