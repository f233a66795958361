"""
WAMP conformance against a real C{twistd cluso}: one Autobahn-Python client
per feature (every serializer, RawSocket, the Advanced Profile features the
router announces, authentication and authorization), and raw clients where
Autobahn cannot send what the specification allows.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import (
    CallOptions,
    CallResult,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)
from support.servers import ChildServer, start_twistd, stop_child_server
from support.wampclient import Clients, Credentials, public_key, within
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredQueue, ensureDeferred
from twisted.internet.task import deferLater

from cluso_router.testing import WebSocketTestClient, connect_client

SERIALIZERS = ["json", "msgpack", "cbor", "json.batched", "msgpack.batched", "cbor.batched"]
RAWSOCKET_SERIALIZERS = ["json", "msgpack", "cbor"]
SHAPES = [
    (({"file": "a.py"},), {}),
    ((1, "x"), {}),
    ((), {"k": "v"}),
    ((1, 2), {"k": [b"\x00\xff"]}),
]
_RAWSOCKET = re.compile(r"WAMP RawSocket listening on [\d.]+:(\d+)")


def rawsocket_url(child: ChildServer, timeout: float = 20.0) -> str:
    """
    The C{rs://} URL of a child's RawSocket endpoint, from its log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(child.log):
            match = _RAWSOCKET.search(line)
            if match:
                return f"rs://127.0.0.1:{match.group(1)}"
        time.sleep(0.05)
    raise AssertionError("no RawSocket endpoint in the log:\n" + "".join(child.log))


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    """
    One C{twistd cluso} for the module: auth off (loopback), no event
    sources, RawSocket on.
    """
    root = tmp_path_factory.mktemp("conformance")
    child = start_twistd(root, "--sources", "", "--listen-rawsocket", "tcp:0:interface=127.0.0.1")
    child.rs_url = rawsocket_url(child)  # type: ignore[attr-defined]
    yield child
    stop_child_server(child)


@pytest_twisted.async_yield_fixture
async def clients() -> AsyncIterator[Clients]:
    joined = Clients()
    yield joined
    await joined.close()


async def received(client: WebSocketTestClient) -> Any:
    """
    The next message a raw client gets.
    """
    return await within(ensureDeferred(client.next_message()))


async def raw_session(url: str) -> WebSocketTestClient:
    """
    A raw C{wamp.2.json} client joined with the callee features Autobahn
    announces.
    """
    client = await within(ensureDeferred(connect_client(url, protocols=["wamp.2.json"])))
    client.send_json(
        [
            1,
            "cluso",
            {
                "roles": {
                    "caller": {"features": {"call_canceling": True}},
                    "subscriber": {},
                    "publisher": {},
                }
            },
        ]
    )
    welcome = await received(client)
    assert welcome[0] == 2, welcome
    return client


def shape(result: Any) -> tuple[Any, Any]:
    if isinstance(result, CallResult):
        return tuple(result.results), result.kwresults
    return (result,), {}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest_twisted.ensureDeferred
async def test_payload_shapes_on_every_serializer(
    router: ChildServer, clients: Clients, serializer: str
) -> None:
    """
    Over WebSocket with each serializer, the four payload shapes (binary
    values included) pass unchanged through pub/sub and calls, to and from
    a JSON client.
    """
    client = await clients.join(router.ws_url, serializer=serializer)
    other = await clients.join(router.ws_url)
    events: dict[str, DeferredQueue[Any]] = {"client": DeferredQueue(), "other": DeferredQueue()}
    topic = f"shapes.{serializer}"
    await client.session.subscribe(lambda *a, **k: events["client"].put((a, k)), topic)
    await other.session.subscribe(lambda *a, **k: events["other"].put((a, k)), topic)
    await client.session.register(lambda *a, **k: CallResult(*a, **k), f"{topic}.a")
    await other.session.register(lambda *a, **k: CallResult(*a, **k), f"{topic}.b")

    got = []
    for args, kwargs in SHAPES:
        for sender, receiver in ((client, "other"), (other, "client")):
            await sender.session.publish(
                topic, *args, options=PublishOptions(acknowledge=True), **kwargs
            )
            got.append(await within(events[receiver].get()))
        got.append(shape(await client.session.call(f"{topic}.b", *args, **kwargs)))
        got.append(shape(await other.session.call(f"{topic}.a", *args, **kwargs)))

    assert got == [s for s in SHAPES for _ in range(4)]


@pytest.mark.parametrize("serializer", RAWSOCKET_SERIALIZERS)
@pytest_twisted.ensureDeferred
async def test_rawsocket(router: ChildServer, clients: Clients, serializer: str) -> None:
    """
    Over RawSocket with each serializer, the payload shapes pass through
    pub/sub and calls with a WebSocket client of the same realm.
    """
    raw = await clients.join(router.rs_url, serializer=serializer)  # type: ignore[attr-defined]
    web = await clients.join(router.ws_url, serializer="msgpack")
    events: DeferredQueue[Any] = DeferredQueue()
    topic = f"rs.{serializer}"
    await web.session.subscribe(lambda *a, **k: events.put((a, k)), topic)
    await web.session.register(lambda *a, **k: CallResult(*a, **k), f"{topic}.echo")

    got = []
    for args, kwargs in SHAPES:
        await raw.session.publish(topic, *args, options=PublishOptions(acknowledge=True), **kwargs)
        got.append(await within(events.get()))
        got.append(shape(await raw.session.call(f"{topic}.echo", *args, **kwargs)))

    assert got == [s for s in SHAPES for _ in range(2)]


@pytest_twisted.ensureDeferred
async def test_welcome_announces_the_advanced_profile(
    router: ChildServer, clients: Clients
) -> None:
    """
    WELCOME announces the broker and dealer features the router implements.
    """
    client = await clients.join(router.ws_url)
    roles = client.session._router_roles

    broker, dealer = roles["broker"], roles["dealer"]
    assert all(
        getattr(broker, feature)
        for feature in (
            "publisher_identification",
            "pattern_based_subscription",
            "session_meta_api",
            "subscription_meta_api",
            "subscriber_blackwhite_listing",
            "publisher_exclusion",
            "subscription_revocation",
            "event_history",
            "payload_transparency",
        )
    )
    assert all(
        getattr(dealer, feature)
        for feature in (
            "caller_identification",
            "pattern_based_registration",
            "session_meta_api",
            "registration_meta_api",
            "shared_registration",
            "call_timeout",
            "call_canceling",
            "progressive_call_results",
            "registration_revocation",
            "testament_meta_api",
            "payload_transparency",
        )
    )


@pytest_twisted.ensureDeferred
async def test_publisher_identification_with_disclose_me(
    router: ChildServer, clients: Clients
) -> None:
    """
    A publisher that asks for disclosure (C{disclose_me}, which Autobahn no
    longer sends, so a raw client) is named in the EVENT's details; one
    that does not ask is not.
    """
    subscriber = await clients.join(router.ws_url)
    seen: DeferredQueue[Any] = DeferredQueue()
    await subscriber.session.subscribe(
        lambda value, details: seen.put((value, details.publisher)),
        "ident.pub",
        options=SubscribeOptions(details_arg="details"),
    )
    raw = await raw_session(router.ws_url)

    raw.send_json([16, 1, {"acknowledge": True, "disclose_me": True}, "ident.pub", ["named"]])
    published = await received(raw)
    raw.send_json([16, 2, {"acknowledge": True}, "ident.pub", ["anonymous"]])
    await received(raw)
    raw.send_json([1000, 1])  # unknown message type: the session is aborted, leave it

    first, second = await within(seen.get()), await within(seen.get())
    assert published[0] == 17
    assert first[0] == "named"
    assert isinstance(first[1], int)
    assert second == ("anonymous", None)


@pytest_twisted.ensureDeferred
async def test_caller_identification_with_disclose_me(
    router: ChildServer, clients: Clients
) -> None:
    """
    A caller asking for disclosure is named in the INVOCATION's details
    (id, authid, authrole); one that does not ask is not.
    """
    callee = await clients.join(router.ws_url)
    await callee.session.register(
        lambda details: [details.caller, details.caller_authrole],
        "ident.call",
        RegisterOptions(details_arg="details"),
    )
    raw = await raw_session(router.ws_url)

    raw.send_json([48, 1, {"disclose_me": True}, "ident.call"])
    named = await received(raw)
    raw.send_json([48, 2, {}, "ident.call"])
    anonymous = await received(raw)

    assert named[0] == 50
    assert isinstance(named[3][0][0], int)
    assert named[3][0][1] == "anonymous"
    assert anonymous[3][0] == [None, None]


@pytest_twisted.ensureDeferred
async def test_pattern_based_registrations(router: ChildServer, clients: Clients) -> None:
    """
    Prefix and wildcard registrations are invoked with the concrete
    procedure in the details (Autobahn fills in an exact one's itself); an
    exact registration beats a prefix, a longer prefix a shorter one, and a
    prefix a wildcard.
    """
    callee = await clients.join(router.ws_url)
    caller = await clients.join(router.ws_url)

    def answer(name: str) -> Any:
        return lambda *a, details: [name, details.procedure]

    options = {"details_arg": "details"}
    await callee.session.register(answer("exact"), "pat.a.b", RegisterOptions(**options))
    await callee.session.register(
        answer("prefix"), "pat.a.", RegisterOptions(match="prefix", **options)
    )
    await callee.session.register(
        answer("longer"), "pat.a.b.", RegisterOptions(match="prefix", **options)
    )
    await callee.session.register(
        answer("wildcard"), "pat..z", RegisterOptions(match="wildcard", **options)
    )

    results = [
        await caller.session.call(procedure)
        for procedure in ("pat.a.b", "pat.a.x", "pat.a.b.c", "pat.q.z", "pat.a.z")
    ]

    assert results == [
        ["exact", "pat.a.b"],
        ["prefix", "pat.a.x"],
        ["longer", "pat.a.b.c"],
        ["wildcard", "pat.q.z"],
        ["prefix", "pat.a.z"],
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("roundrobin", ["a", "b", "a", "b"]),
        ("first", ["a", "a", "a", "a"]),
        ("last", ["b", "b", "b", "b"]),
    ],
)
@pytest_twisted.ensureDeferred
async def test_shared_registrations(
    router: ChildServer, clients: Clients, policy: str, expected: list[str]
) -> None:
    """
    Two callees sharing a registration are invoked as its policy says; a
    third registering with another policy is refused saying so.
    """
    procedure = f"shared.{policy}"
    a = await clients.join(router.ws_url)
    b = await clients.join(router.ws_url)
    c = await clients.join(router.ws_url)
    await a.session.register(lambda: "a", procedure, RegisterOptions(invoke=policy))
    await b.session.register(lambda: "b", procedure, RegisterOptions(invoke=policy))
    caller = await clients.join(router.ws_url)

    results = [await caller.session.call(procedure) for _ in expected]
    with pytest.raises(ApplicationError) as refused:
        await c.session.register(lambda: "c", procedure, RegisterOptions(invoke="single"))
    with pytest.raises(ApplicationError) as other_policy:
        await c.session.register(
            lambda: "c",
            procedure,
            RegisterOptions(invoke="random" if policy != "random" else "first"),
        )

    assert results == expected
    assert refused.value.error == "wamp.error.procedure_already_exists"
    assert other_policy.value.error == (
        "wamp.error.procedure_exists_with_different_invocation_policy"
    )


@pytest_twisted.ensureDeferred
async def test_shared_registration_random(router: ChildServer, clients: Clients) -> None:
    """
    A random shared registration reaches both callees over 40 calls (the
    odds of missing one are 2 in 2**40).
    """
    a = await clients.join(router.ws_url)
    b = await clients.join(router.ws_url)
    await a.session.register(lambda: "a", "shared.rnd", RegisterOptions(invoke="random"))
    await b.session.register(lambda: "b", "shared.rnd", RegisterOptions(invoke="random"))

    results = {await a.session.call("shared.rnd") for _ in range(40)}

    assert results == {"a", "b"}


class Hanging:
    """
    A procedure that never answers, and whether it was interrupted.
    """

    def __init__(self) -> None:
        self.interrupted: Deferred[str] = Deferred()

    def __call__(self, *args: Any) -> Deferred[Any]:
        def canceled(_: Deferred[Any]) -> None:
            self.interrupted.callback("interrupted")

        return Deferred(canceled)


@pytest_twisted.ensureDeferred
async def test_call_timeout_interrupts_the_callee(router: ChildServer, clients: Clients) -> None:
    """
    A call with a timeout (milliseconds, as the specification says) fails
    with C{wamp.error.timeout} when the callee does not answer in time, and
    the callee gets an INTERRUPT.
    """
    callee = await clients.join(router.ws_url)
    caller = await clients.join(router.ws_url)
    hanging = Hanging()
    await callee.session.register(hanging, "slow.timeout")
    started = reactor.seconds()

    with pytest.raises(ApplicationError) as timed_out:
        await within(caller.session.call("slow.timeout", options=CallOptions(timeout=300)))

    assert timed_out.value.error == "wamp.error.timeout"
    assert 0.25 <= reactor.seconds() - started < 3
    assert await within(hanging.interrupted) == "interrupted"


@pytest_twisted.ensureDeferred
async def test_cancel_modes(router: ChildServer, clients: Clients) -> None:
    """
    CANCEL C{skip} answers the caller at once and leaves the callee alone
    (its late result is dropped); C{killnowait} answers at once and
    interrupts the callee; C{kill} interrupts the callee and answers the
    caller with what the callee then says.
    """
    callee = await clients.join(router.ws_url)
    procedures = {mode: Hanging() for mode in ("skip", "kill", "killnowait")}
    for mode, procedure in procedures.items():
        await callee.session.register(procedure, f"slow.{mode}")
    raw = await raw_session(router.ws_url)

    answers = {}
    for request, mode in enumerate(procedures, start=1):
        raw.send_json([48, request, {}, f"slow.{mode}"])
        await deferLater(reactor, 0.2, lambda: None)
        raw.send_json([49, request, {"mode": mode}])
        answers[mode] = await received(raw)
    await deferLater(reactor, 0.3, lambda: None)

    assert answers["skip"][:5] == [8, 48, 1, {}, "wamp.error.canceled"]
    assert not procedures["skip"].interrupted.called
    assert answers["kill"][:5] == [8, 48, 2, {}, "wamp.error.canceled"]
    assert procedures["kill"].interrupted.called
    assert answers["killnowait"][:5] == [8, 48, 3, {}, "wamp.error.canceled"]
    assert procedures["killnowait"].interrupted.called


@pytest_twisted.ensureDeferred
async def test_autobahn_cancel_interrupts(router: ChildServer, clients: Clients) -> None:
    """
    Autobahn's own cancel (a CANCEL without a mode: C{killnowait}) fails
    the call with C{wamp.error.canceled} and interrupts the callee.
    """
    callee = await clients.join(router.ws_url)
    caller = await clients.join(router.ws_url)
    hanging = Hanging()
    await callee.session.register(hanging, "slow.autobahn")

    call = caller.session.call("slow.autobahn")
    await deferLater(reactor, 0.2, lambda: None)
    call.cancel()

    with pytest.raises((ApplicationError, CancelledError)):
        await within(call)
    assert await within(hanging.interrupted) == "interrupted"


@pytest_twisted.ensureDeferred
async def test_session_meta_api_and_events(router: ChildServer, clients: Clients) -> None:
    """
    A second session sees another join and leave as meta events, and the
    session meta procedures count, list, describe and kill sessions.
    """
    watcher = await clients.join(router.ws_url)
    events: DeferredQueue[tuple[str, Any]] = DeferredQueue()
    await watcher.session.subscribe(lambda d: events.put(("join", d)), "wamp.session.on_join")
    await watcher.session.subscribe(lambda *a: events.put(("leave", a)), "wamp.session.on_leave")
    other = await clients.join(router.ws_url, serializer="msgpack")
    other_id, other_authid = other.id, other.details.authid

    joined = await within(events.get())
    count = await watcher.session.call("wamp.session.count")
    listed = await watcher.session.call("wamp.session.list")
    details = await watcher.session.call("wamp.session.get", other_id)
    with pytest.raises(ApplicationError) as unknown:
        await watcher.session.call("wamp.session.get", 1)
    await watcher.session.call("wamp.session.kill", other_id, reason="com.example.bye")
    left = await within(other.left)
    leave = await within(events.get())

    assert joined[0] == "join"
    assert (joined[1]["session"], joined[1]["authrole"]) == (other_id, "anonymous")
    assert count >= 2
    assert {watcher.id, other_id} <= set(listed)
    assert details["session"] == other_id
    assert details["transport"]["serializer"] == "msgpack"
    assert unknown.value.error == "wamp.error.no_such_session"
    assert left.reason == "com.example.bye"
    assert leave == ("leave", (other_id, other_authid, "anonymous"))


@pytest_twisted.ensureDeferred
async def test_subscription_meta_api_and_events(router: ChildServer, clients: Clients) -> None:
    """
    A second session sees another's subscription created, subscribed,
    unsubscribed and deleted; the subscription meta procedures find and
    describe it and count its subscribers.
    """
    watcher = await clients.join(router.ws_url)
    events: DeferredQueue[tuple[str, Any]] = DeferredQueue()
    for name in ("on_create", "on_subscribe", "on_unsubscribe", "on_delete"):
        await watcher.session.subscribe(
            lambda *a, name=name: events.put((name, a)), f"wamp.subscription.{name}"
        )
    other = await clients.join(router.ws_url)

    subscription = await other.session.subscribe(lambda *a: None, "meta.sub.topic")
    created = await within(events.get())
    subscribed = await within(events.get())
    looked_up = await watcher.session.call("wamp.subscription.lookup", "meta.sub.topic")
    matched = await watcher.session.call("wamp.subscription.match", "meta.sub.topic")
    described = await watcher.session.call("wamp.subscription.get", subscription.id)
    counted = await watcher.session.call("wamp.subscription.count_subscribers", subscription.id)
    listed = await watcher.session.call("wamp.subscription.list_subscribers", subscription.id)
    await subscription.unsubscribe()
    unsubscribed = await within(events.get())
    deleted = await within(events.get())

    assert created[0] == "on_create"
    assert created[1][0] == other.id
    assert (created[1][1]["uri"], created[1][1]["match"]) == ("meta.sub.topic", "exact")
    assert subscribed == ("on_subscribe", (other.id, subscription.id))
    assert looked_up == subscription.id
    assert matched == [subscription.id]
    assert described["id"] == subscription.id
    assert (counted, listed) == (1, [other.id])
    assert unsubscribed == ("on_unsubscribe", (other.id, subscription.id))
    assert deleted == ("on_delete", (other.id, subscription.id))


@pytest_twisted.ensureDeferred
async def test_registration_meta_api_and_events(router: ChildServer, clients: Clients) -> None:
    """
    A second session sees another's registration created, registered,
    unregistered and deleted; the registration meta procedures find it.
    """
    watcher = await clients.join(router.ws_url)
    events: DeferredQueue[tuple[str, Any]] = DeferredQueue()
    for name in ("on_create", "on_register", "on_unregister", "on_delete"):
        await watcher.session.subscribe(
            lambda *a, name=name: events.put((name, a)), f"wamp.registration.{name}"
        )
    other = await clients.join(router.ws_url)

    registration = await other.session.register(lambda: None, "meta.reg.proc")
    created = await within(events.get())
    registered = await within(events.get())
    looked_up = await watcher.session.call("wamp.registration.lookup", "meta.reg.proc")
    matched = await watcher.session.call("wamp.registration.match", "meta.reg.proc")
    described = await watcher.session.call("wamp.registration.get", registration.id)
    callees = await watcher.session.call("wamp.registration.list_callees", registration.id)
    await registration.unregister()
    unregistered = await within(events.get())
    deleted = await within(events.get())

    assert created[0] == "on_create"
    assert (created[1][1]["uri"], created[1][1]["invoke"]) == ("meta.reg.proc", "single")
    assert registered == ("on_register", (other.id, registration.id))
    assert (looked_up, matched) == (registration.id, registration.id)
    assert described["match"] == "exact"
    assert callees == [other.id]
    assert unregistered == ("on_unregister", (other.id, registration.id))
    assert deleted == ("on_delete", (other.id, registration.id))


@pytest_twisted.ensureDeferred
async def test_testament_after_an_abrupt_disconnect(router: ChildServer, clients: Clients) -> None:
    """
    A session's testament is published when its connection drops without
    a goodbye, before C{wamp.session.on_leave}; a flushed one is not.
    """
    watcher = await clients.join(router.ws_url)
    events: DeferredQueue[tuple[str, Any]] = DeferredQueue()
    await watcher.session.subscribe(
        lambda *a, **k: events.put(("testament", (a, k))), "testament.topic"
    )
    await watcher.session.subscribe(lambda *a: events.put(("leave", a)), "wamp.session.on_leave")
    dying = await clients.join(router.ws_url)
    await dying.session.call(
        "wamp.session.add_testament", "testament.topic", ["gone"], {"who": "dying"}
    )
    await dying.session.call(
        "wamp.session.add_testament", "testament.topic", ["flushed"], {}, scope="detached"
    )
    await dying.session.call("wamp.session.flush_testaments", scope="detached")

    dying.session._transport.transport.abortConnection()

    assert await within(events.get()) == ("testament", (("gone",), {"who": "dying"}))
    assert (await within(events.get()))[0] == "leave"


@pytest_twisted.ensureDeferred
async def test_event_history(router: ChildServer, clients: Clients) -> None:
    """
    C{wamp.subscription.get_events} answers a subscription's past events
    from the channel history, with their publication ids and payloads, in
    order (or newest first with C{reverse}), at most C{limit}.
    """
    publisher = await clients.join(router.ws_url)
    subscriber = await clients.join(router.ws_url)
    subscription = await subscriber.session.subscribe(lambda *a, **k: None, "hist.topic")
    ids = []
    for n in range(5):
        published = await publisher.session.publish(
            "hist.topic", n, options=PublishOptions(acknowledge=True), n=n
        )
        ids.append(published.id)

    events = await subscriber.session.call("wamp.subscription.get_events", subscription.id)
    newest = await subscriber.session.call(
        "wamp.subscription.get_events", subscription.id, limit=2, reverse=True
    )
    with pytest.raises(ApplicationError) as unknown:
        await subscriber.session.call("wamp.subscription.get_events", 123456789)

    assert [e["publication"] for e in events] == ids
    assert [(e["args"], e["kwargs"]) for e in events] == [([n], {"n": n}) for n in range(5)]
    assert [e["publication"] for e in newest] == ids[:2:-1][:2]
    assert unknown.value.error == "wamp.error.no_such_subscription"


@pytest_twisted.ensureDeferred
async def test_payload_passthru(router: ChildServer, clients: Clients) -> None:
    """
    A publication in payload passthru mode (C{ppt_*} options, one binary
    argument) reaches a subscriber with its options and payload untouched;
    Autobahn's transparent payload (C{enc_*}, a payload in place of the
    arguments) too.
    """
    raw_subscriber = await raw_session(router.ws_url)
    raw_subscriber.send_json([32, 1, {}, "ppt.topic"])
    await received(raw_subscriber)
    publisher = await within(
        ensureDeferred(connect_client(router.ws_url, protocols=["wamp.2.json"]))
    )
    publisher.send_json(
        [1, "cluso", {"roles": {"publisher": {"features": {"payload_passthru_mode": True}}}}]
    )
    await received(publisher)
    options = {"ppt_scheme": "mqtt", "ppt_serializer": "mqtt"}

    publisher.send_json([16, 1, {"acknowledge": True, **options}, "ppt.topic", ["\u0000AAEC"]])
    await received(publisher)
    passthru = await received(raw_subscriber)
    publisher.send_json(
        [
            16,
            2,
            {"acknowledge": True, "enc_algo": "mqtt", "enc_serializer": "json"},
            "ppt.topic",
            "\u0000b3BhcXVl",
        ]
    )
    await received(publisher)
    transparent = await received(raw_subscriber)

    assert passthru[3] == options
    assert passthru[4] == ["\u0000AAEC"]
    assert transparent[3] == {"enc_algo": "mqtt", "enc_serializer": "json"}
    assert transparent[4] == "\u0000b3BhcXVl"


@pytest_twisted.ensureDeferred
async def test_passthru_without_announcing_is_a_protocol_violation(router: ChildServer) -> None:
    """
    A publisher sending C{ppt_*} options without announcing payload
    passthru mode is aborted, as the specification requires.
    """
    raw = await raw_session(router.ws_url)

    raw.send_json([16, 1, {"ppt_scheme": "mqtt"}, "ppt.topic", ["\u0000AAEC"]])
    aborted = await received(raw)

    assert aborted[:1] == [3]
    assert aborted[2] == "wamp.error.protocol_violation"


SECURE_PRIVATE_KEY = "4d" * 32
SECURED_CONFIG = """
realm = "cluso"

[auth.anonymous]
role = "guest"

[auth.ticket.principals.svc]
ticket = "svc-ticket-secret"
role = "backend"

[auth.wampcra.users.bob]
secret = "bob-secret"
role = "backend"
salt = "s4lt"
iterations = 100
keylen = 32

[auth.cryptosign.principals.carol]
authorized_keys = ["{public}"]
role = "backend"

[roles.backend]
rate_limit = 0
disclose = ["caller", "publisher"]

[[roles.backend.permissions]]
uri = ""
match = "prefix"
allow = ["publish", "subscribe", "call", "register"]

[roles.guest]
rate_limit = 10
rate_burst = 10

[[roles.guest.permissions]]
uri = "public."
match = "prefix"
allow = ["publish", "subscribe", "call"]

[roles.user]

[[roles.user.permissions]]
uri = ""
match = "prefix"
allow = ["publish", "subscribe", "call", "register"]

[[roles.user.permissions]]
uri = "locked."
match = "prefix"
allow = []
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    """
    A C{twistd cluso} with the token on and a C{--wamp-config}: anonymous
    guests, a ticket, a WAMP-CRA and a cryptosign principal of a backend
    role, and token holders kept out of C{locked.}.
    """
    root = tmp_path_factory.mktemp("secured")
    config = root / "wamp.toml"
    config.write_text(SECURED_CONFIG.replace("{public}", public_key(SECURE_PRIVATE_KEY)))
    child = start_twistd(
        root,
        "--sources",
        "",
        "--listen-rawsocket",
        "tcp:0:interface=127.0.0.1",
        "--wamp-config",
        str(config),
        auth=True,
    )
    child.rs_url = rawsocket_url(child)  # type: ignore[attr-defined]
    yield child
    stop_child_server(child)


@pytest.mark.parametrize(
    ("credentials", "authid", "authrole", "authmethod"),
    [
        (Credentials("ticket", "svc", "svc-ticket-secret"), "svc", "backend", "ticket"),
        (Credentials("wampcra", "bob", "bob-secret"), "bob", "backend", "wampcra"),
        (Credentials("cryptosign", None, SECURE_PRIVATE_KEY), "carol", "backend", "cryptosign"),
        (None, None, "guest", "anonymous"),
    ],
)
@pytest.mark.parametrize("transport", ["websocket", "rawsocket"])
@pytest_twisted.ensureDeferred
async def test_authentication_methods(
    secured: ChildServer,
    clients: Clients,
    credentials: Credentials | None,
    authid: str | None,
    authrole: str,
    authmethod: str,
    transport: str,
) -> None:
    """
    Each configured method joins with its principal's role, on WebSocket
    and RawSocket alike (cryptosign finds the principal by its key).
    """
    url = secured.ws_url if transport == "websocket" else secured.rs_url  # type: ignore[attr-defined]

    client = await clients.join(url, credentials=credentials)

    details = client.details
    assert (details.authrole, details.authmethod) == (authrole, authmethod)
    if authid is not None:
        assert details.authid == authid


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials("ticket", "svc", "wrong"),
        Credentials("ticket", None, "not-the-token"),
        Credentials("wampcra", "bob", "wrong"),
        Credentials("wampcra", "nobody", "bob-secret"),
        Credentials("cryptosign", None, "5e" * 32),
    ],
)
@pytest_twisted.ensureDeferred
async def test_failed_authentication_is_aborted(
    secured: ChildServer, clients: Clients, credentials: Credentials
) -> None:
    """
    A wrong ticket, CRA secret or key, or an unknown principal, is aborted.
    """
    with pytest.raises(Exception) as refused:
        await clients.join(secured.ws_url, credentials=credentials)

    assert "wamp.error" in str(refused.value)


@pytest_twisted.ensureDeferred
async def test_server_token_as_ticket(secured: ChildServer, clients: Clients) -> None:
    """
    The server token still works as a ticket (and in the handshake), with
    the role of token holders.
    """
    by_ticket = await clients.join(
        secured.ws_url, credentials=Credentials("ticket", "me", secured.token or "")
    )
    by_header = await clients.join(secured.ws_url, headers=secured.headers)

    assert (by_ticket.details.authrole, by_ticket.details.authmethod) == ("user", "ticket")
    assert (by_header.details.authrole, by_header.details.authmethod) == ("user", "token")


@pytest_twisted.ensureDeferred
async def test_permission_denials(secured: ChildServer, clients: Clients) -> None:
    """
    A guest may do what its rules allow under C{public.} and nothing else:
    subscribing, publishing (acknowledged), calling and registering
    elsewhere get C{wamp.error.not_authorized}, meta procedures too.
    """
    guest = await clients.join(secured.ws_url)

    await guest.session.subscribe(lambda *a: None, "public.news")
    denied = []
    for attempt in (
        guest.session.subscribe(lambda *a: None, "secret.news"),
        guest.session.publish("secret.news", 1, options=PublishOptions(acknowledge=True)),
        guest.session.call("secret.proc"),
        guest.session.register(lambda: None, "public.proc"),
        guest.session.call("wamp.session.count"),
    ):
        with pytest.raises(ApplicationError) as refused:
            await within(attempt)
        denied.append(refused.value.error)

    assert denied == ["wamp.error.not_authorized"] * 5


@pytest_twisted.ensureDeferred
async def test_roles_apply_to_the_json_dialect(secured: ChildServer, clients: Clients) -> None:
    """
    The JSON dialect's connections have the role of token holders: its
    rules refuse their subscribe, send and invoke under C{locked.}, as they
    refuse a token holder's WAMP session.
    """
    client = await within(ensureDeferred(connect_client(secured.ws_url, headers=secured.headers)))
    await received(client)
    token_holder = await clients.join(secured.ws_url, headers=secured.headers)

    codes = []
    for n, request in enumerate(
        (
            {"type": "subscribe", "channel": "locked.x"},
            {"type": "send", "channel": "locked.x", "data": 1},
            {"type": "invoke", "channel": "locked.proc"},
            {"type": "subscribe", "channel": "open.x"},
        )
    ):
        reply = await within(ensureDeferred(client.request({**request, "id": n})))
        codes.append(reply.get("code", reply["data"].get("status")))
    with pytest.raises(ApplicationError) as refused:
        await token_holder.session.subscribe(lambda *a: None, "locked.y")

    assert codes == ["not_authorized", "not_authorized", "not_authorized", "subscribed"]
    assert refused.value.error == "wamp.error.not_authorized"


@pytest_twisted.ensureDeferred
async def test_identification_by_role(secured: ChildServer, clients: Clients) -> None:
    """
    A role that discloses callers and publishers has its sessions named in
    INVOCATION and EVENT details without asking.
    """
    backend = await clients.join(
        secured.ws_url, credentials=Credentials("ticket", "svc", "svc-ticket-secret")
    )
    other = await clients.join(
        secured.ws_url, credentials=Credentials("wampcra", "bob", "bob-secret")
    )
    events: DeferredQueue[Any] = DeferredQueue()
    await other.session.subscribe(
        lambda details: events.put((details.publisher, details.publisher_authid)),
        "ident.role",
        options=SubscribeOptions(details_arg="details"),
    )
    await other.session.register(
        lambda details: [details.caller, details.caller_authid],
        "ident.role.proc",
        RegisterOptions(details_arg="details"),
    )

    await backend.session.publish("ident.role", options=PublishOptions(acknowledge=True))
    caller = await backend.session.call("ident.role.proc")

    assert await within(events.get()) == (backend.id, "svc")
    assert caller == [backend.id, "svc"]


@pytest_twisted.ensureDeferred
async def test_rate_limits_by_role(secured: ChildServer, clients: Clients) -> None:
    """
    A backend role without a rate limit publishes a burst of 3,000 events
    without losing one; a guest (10 per second, bursts of 10) over its
    rate gets an ERROR for each acknowledged publish it loses, never
    silence.
    """
    backend = await clients.join(
        secured.ws_url, credentials=Credentials("ticket", "svc", "svc-ticket-secret")
    )
    listener = await clients.join(
        secured.ws_url, credentials=Credentials("wampcra", "bob", "bob-secret")
    )
    counted: list[Any] = []
    done: Deferred[None] = Deferred()

    def count(*args: Any) -> None:
        counted.append(args)
        if len(counted) == 3000:
            done.callback(None)

    await listener.session.subscribe(count, "burst.topic")
    for n in range(2999):
        backend.session.publish("burst.topic", n)
    await backend.session.publish("burst.topic", 2999, options=PublishOptions(acknowledge=True))
    await within(done, 30)
    guest = await clients.join(secured.ws_url)
    outcomes = []
    for n in range(15):
        try:
            await guest.session.publish("public.rate", n, options=PublishOptions(acknowledge=True))
            outcomes.append("ok")
        except ApplicationError as e:
            outcomes.append(e.error)

    assert [args[0] for args in counted] == list(range(3000))
    assert outcomes.count("ok") >= 10
    assert set(outcomes) == {"ok", "cluso.error.rate_limited"}
