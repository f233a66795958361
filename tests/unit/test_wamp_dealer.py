"""
The WAMP dealer and meta API without sockets: matching and invocation
policies, timeouts and cancel modes on a fake clock, the budgets (pending
calls, registrations, testaments, history answers), and the history query.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from autobahn.wamp import message
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluso_router.router.event import Audience, Event, Extras
from cluso_router.router.router import Router
from cluso_router.router.subscriptions import Subscription
from cluso_router.ws.wamp.codec import ProtocolViolation
from cluso_router.ws.wamp.dealer import MAX_PENDING_CALLS, Call, DealerError, Payload
from cluso_router.ws.wamp.meta import MAX_TESTAMENTS, HistoryQuery
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.rpc import SessionRPC
from cluso_router.ws.wamp.serializers import JSON
from cluso_router.ws.wamp.session import WampSession
from cluso_router.ws.wamp.wire import WEBSOCKET, wire

CALLEE_FEATURES = {"callee": {"features": {"call_canceling": True}}}


class Connection:
    def sendPing(self, payload: bytes | None = None) -> None:
        pass

    def sendCloseFrame(
        self, code: Any = None, reasonUtf8: Any = None, isReply: Any = False
    ) -> None:
        pass

    def dropConnection(self, abort: bool = False) -> None:
        pass


class Peer:
    """
    A joined session with its RPC side, recording what it is sent.
    """

    def __init__(
        self, realm: WampRealm, roles: dict[str, Any] | None = None, registrations: int = 3
    ) -> None:
        self.sent: list[Any] = []
        self.session = WampSession(Connection(), StringTransport(), wire(JSON, WEBSOCKET).encoder)
        self.session.roles = roles or {}
        self.session.authid, self.session.authrole = "peer", "anonymous"
        realm.join(self.session)
        self.rpc = SessionRPC(self.session, realm, self.record, max_registrations=registrations)

    def record(self, msg: Any) -> None:
        self.sent.append(msg if isinstance(msg, list) else msg.marshal())

    def register(self, procedure: str, match: str = "exact", invoke: str = "single") -> Any:
        self.rpc.register(
            message.Register(len(self.sent) + 1, procedure, match=match, invoke=invoke), {}
        )
        return self.sent[-1]

    def call(self, request: int, procedure: str, **options: Any) -> None:
        self.rpc.call(message.Call(request, procedure, **options), {})

    def answer(self, invocation: Any, value: Any) -> None:
        self.rpc.yield_(message.Yield(invocation[1], args=[value]), {})


@pytest.fixture
def realm() -> WampRealm:
    router = Router(clock=Clock(), wallclock=lambda: 1733758245.0)
    realm = WampRealm(router)
    realm.dealer._rng = random.Random(7)
    return realm


@pytest.mark.parametrize(
    ("invoke", "expected"),
    [
        ("roundrobin", [0, 1, 2, 0, 1]),
        ("first", [0, 0, 0, 0, 0]),
        ("last", [2, 2, 2, 2, 2]),
    ],
)
def test_invocation_policies(realm: WampRealm, invoke: str, expected: list[int]) -> None:
    """
    A shared registration invokes its callees in registration order as its
    policy says.
    """
    callees = [Peer(realm) for _ in range(3)]
    for callee in callees:
        assert callee.register("shared", invoke=invoke)[0] == 65
    caller = Peer(realm)

    order = []
    for request in range(1, 6):
        before = [len(c.sent) for c in callees]
        caller.call(request, "shared")
        order.append(next(i for i, c in enumerate(callees) if len(c.sent) > before[i]))

    assert order == expected


def test_random_policy_uses_the_dealers_generator(realm: WampRealm) -> None:
    """
    C{random} picks with the dealer's random generator (seeded here).
    """
    callees = [Peer(realm) for _ in range(2)]
    for callee in callees:
        callee.register("rnd", invoke="random")
    caller = Peer(realm)

    for request in range(1, 21):
        caller.call(request, "rnd")

    counts = [sum(1 for m in c.sent if m[0] == 68) for c in callees]
    assert sum(counts) == 20
    assert min(counts) > 0


def test_best_match(realm: WampRealm) -> None:
    """
    Exact beats prefix beats wildcard; the longest prefix and the wildcard
    with most named components win.
    """
    peer = Peer(realm, registrations=10)
    for procedure, match in (
        ("a.b.c", "exact"),
        ("a.", "prefix"),
        ("a.b.", "prefix"),
        ("a..c", "wildcard"),
        ("..c", "wildcard"),
        ("x..c", "wildcard"),
    ):
        peer.register(procedure, match)
    dealer = realm.dealer

    def best(procedure: str) -> Any:
        registration = dealer.best(procedure)
        return None if registration is None else (registration.pattern, registration.match)

    assert best("a.b.c") == ("a.b.c", "exact")
    assert best("a.b.d") == ("a.b.", "prefix")
    assert best("a.x") == ("a.", "prefix")
    assert best("x.y.c") == ("x..c", "wildcard")
    assert best("q.y.c") == ("..c", "wildcard")
    assert best("q") is None


def test_registration_errors(realm: WampRealm) -> None:
    """
    Reserved names, router procedures, a taken single registration and a
    different policy are refused with the URIs the specification names;
    past the budget, registrations are refused too.
    """
    a, b = Peer(realm), Peer(realm)
    realm.router.register("router.proc", lambda data: data)
    a.register("shared.x", invoke="roundrobin")

    errors = [
        b.register("wamp.mine")[4],
        b.register("router.proc")[4],
        b.register("shared.x", invoke="first")[4],
        b.register("shared.x", invoke="single")[4],
    ]
    for n in range(2):
        a.register(f"more.{n}")
    over = a.register("one.too.many")

    assert errors == [
        "wamp.error.invalid_uri",
        "wamp.error.procedure_already_exists",
        "wamp.error.procedure_exists_with_different_invocation_policy",
        "wamp.error.procedure_already_exists",
    ]
    assert over[4] == "cluso.error.too_many_registrations"


def test_timeout_on_the_dealers_clock(realm: WampRealm) -> None:
    """
    A call's timeout is milliseconds on the injected clock; then the caller
    gets C{wamp.error.timeout} and a callee that supports canceling an
    INTERRUPT C{killnowait}; its late YIELD is dropped.
    """
    callee, caller = Peer(realm, CALLEE_FEATURES), Peer(realm)
    callee.register("slow")
    caller.call(1, "slow", timeout=1500)
    clock: Clock = realm.router.clock  # type: ignore[assignment]

    clock.advance(1.4)
    early = list(caller.sent)
    clock.advance(0.2)
    invocation = callee.sent[1]
    callee.answer(invocation, "late")

    assert early == []
    assert caller.sent == [[8, 48, 1, {}, "wamp.error.timeout", ["the call timed out"]]]
    assert callee.sent[-1] == [69, invocation[1], {"mode": "killnowait"}]


@pytest.mark.parametrize(
    ("mode", "roles", "interrupt", "answered_at_once"),
    [
        ("skip", CALLEE_FEATURES, None, True),
        ("killnowait", CALLEE_FEATURES, "killnowait", True),
        ("kill", CALLEE_FEATURES, "kill", False),
        ("kill", {}, None, True),
    ],
)
def test_cancel_modes(
    realm: WampRealm,
    mode: str,
    roles: dict[str, Any],
    interrupt: str | None,
    answered_at_once: bool,
) -> None:
    """
    C{skip} answers at once without INTERRUPT; C{killnowait} answers at
    once and interrupts; C{kill} interrupts and waits for the callee; a
    callee without call canceling always gets C{skip}.
    """
    callee, caller = Peer(realm, roles), Peer(realm)
    callee.register("slow")
    caller.call(1, "slow")
    invocation = callee.sent[1]

    caller.rpc.cancel(message.Cancel(1, mode=mode), {})
    at_once = list(caller.sent)
    callee.rpc.error(message.Error(68, invocation[1], "wamp.error.canceled"), {})

    interrupts = [m for m in callee.sent if m[0] == 69]
    assert interrupts == ([] if interrupt is None else [[69, invocation[1], {"mode": interrupt}]])
    assert bool(at_once) is answered_at_once
    assert caller.sent == [[8, 48, 1, {}, "wamp.error.canceled", ["canceled"]]]


def test_pending_calls_budget(realm: WampRealm) -> None:
    """
    Past the budget of calls in flight, a call is refused at once.
    """
    callee, caller = Peer(realm), Peer(realm)
    callee.register("slow")

    for request in range(1, MAX_PENDING_CALLS + 2):
        caller.call(request, "slow")

    assert caller.sent == [
        [
            8,
            48,
            MAX_PENDING_CALLS + 1,
            {},
            "cluso.error.too_many_calls",
            [f"a session may have at most {MAX_PENDING_CALLS} calls in flight"],
        ]
    ]


def test_callee_and_caller_leaving(realm: WampRealm) -> None:
    """
    When a callee leaves, its pending calls fail with
    C{cluso.error.callee_lost}; when a caller leaves, its callee is
    interrupted.
    """
    callee, caller, gone = Peer(realm, CALLEE_FEATURES), Peer(realm), Peer(realm)
    callee.register("slow")
    caller.call(1, "slow")
    gone.call(1, "slow")
    invocations = [m for m in callee.sent if m[0] == 68]

    gone.rpc.leave()
    callee.rpc.leave()

    assert callee.sent[-1] == [69, invocations[1][1], {"mode": "killnowait"}]
    assert caller.sent == [[8, 48, 1, {}, "cluso.error.callee_lost", ["the callee went away"]]]
    assert realm.dealer.best("slow") is None


def test_testament_budget(realm: WampRealm) -> None:
    """
    A session may leave at most L{MAX_TESTAMENTS} testaments per scope.
    """
    peer = Peer(realm)
    add = realm.dealer.meta["wamp.session.add_testament"]

    for n in range(MAX_TESTAMENTS):
        add(Call("wamp.session.add_testament", Payload(["t", [n], {}]), None, peer.session))  # type: ignore[arg-type]
    with pytest.raises(DealerError) as refused:
        add(Call("wamp.session.add_testament", Payload(["t", [0], {}]), None, peer.session))  # type: ignore[arg-type]

    assert refused.value.uri == "wamp.error.testament_error"
    assert len(peer.session.testaments["destroyed"]) == MAX_TESTAMENTS


def event(n: int, **extras: Any) -> Event:
    return Event(
        "t",
        n,
        f"2024-12-09T15:30:{n:02d}.000Z",
        n,
        publication=100 + n,
        extras=Extras(args=[n], **extras) if extras else None,
    )


def test_history_query() -> None:
    """
    The history answer is the newest C{limit} events in order (reversed on
    request), bounded by publication ids and times, without events limited
    to session ids and with those limited to other authids or authroles.
    """
    subscription = Subscription("t", "exact")
    caller = WampSession(Connection(), StringTransport(), wire(JSON, WEBSOCKET).encoder)
    caller.authid, caller.authrole = "me", "user"
    events = [
        event(0),
        event(1, audience=Audience(eligible=frozenset({5}))),
        event(2, audience=Audience(eligible_authrole=frozenset({"admin"}))),
        event(3, audience=Audience(eligible_authid=frozenset({"me"}))),
        event(4),
        event(5),
    ]

    def ask(**kwargs: Any) -> list[int]:
        answer = HistoryQuery(kwargs).answer(subscription, events, caller)
        return [item["publication"] - 100 for item in answer]

    assert ask() == [0, 3, 4, 5]
    assert ask(limit=2) == [4, 5]
    assert ask(limit=2, reverse=True) == [5, 4]
    assert ask(after_publication=103) == [4, 5]
    assert ask(from_publication=103, before_publication=105) == [3, 4]
    assert ask(until_time="2024-12-09T15:30:03Z") == [0, 3]
    assert ask(limit=10_000) == [0, 3, 4, 5]
    with pytest.raises(DealerError):
        HistoryQuery({"limit": 0})


def test_payload_passthru_calls(realm: WampRealm) -> None:
    """
    A call in payload passthru mode reaches a callee that announced it with
    its C{ppt_*} options and binary argument untouched, and the answer
    comes back the same way; a callee that did not announce it is not
    called (C{wamp.error.feature_not_supported}); a caller that did not
    announce it violates the protocol.
    """
    announced = {"features": {"payload_passthru_mode": True}}
    callee = Peer(realm, {"callee": announced})
    callee.register("ppt.proc")
    plain = Peer(realm)
    plain.register("plain.proc")
    caller = Peer(realm, {"caller": announced})
    options = {"ppt_scheme": "mqtt", "ppt_serializer": "mqtt"}

    caller.rpc.call(message.Call(1, "ppt.proc", args=[b"\x01"]), options)
    caller.rpc.call(message.Call(2, "plain.proc", args=[b"\x01"]), options)
    invocation = callee.sent[-1]
    callee.rpc.yield_(message.Yield(invocation[1], args=[b"\x02"]), {"ppt_scheme": "mqtt"})

    assert invocation[3:] == [options, [b"\x01"]]
    assert caller.sent[0][4] == "wamp.error.feature_not_supported"
    assert caller.sent[1] == [50, 1, {"ppt_scheme": "mqtt"}, [b"\x02"]]
    with pytest.raises(ProtocolViolation):
        Peer(realm).rpc.call(message.Call(3, "ppt.proc", args=[b"\x01"]), options)
