"""
WAMP across two C{twistd cluso} nodes sharing the Redis at 127.0.0.1:6379
(under a key prefix of the test's own): payloads, publisher exclusion and
subscriber black- and whitelisting, event history, calls and shared
registrations, timeouts and a callee's node going away.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, CallResult, PublishOptions, RegisterOptions
from support.servers import ChildServer, start_twistd, stop_child_server
from support.wampclient import Clients, within
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, ensureDeferred
from twisted.internet.task import deferLater

from cluso_router.testing import connect_client

REDIS = "redis://127.0.0.1:6379/0"


def nodes_prefix(node: ChildServer) -> str:
    """
    The Redis key prefix a node was started with.
    """
    args = node.process.args
    assert isinstance(args, list)
    return str(args[args.index("--redis-prefix") + 1])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ChildServer]]:
    prefix = f"wamp-cluster-{secrets.token_hex(4)}:"
    started = []
    try:
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(name)
            started.append(
                start_twistd(root, "--sources", "", "--redis", REDIS, "--redis-prefix", prefix)
            )
        yield started
    finally:
        for node in started:
            stop_child_server(node)


@pytest_twisted.async_yield_fixture
async def clients() -> AsyncIterator[Clients]:
    joined = Clients()
    yield joined
    await joined.close()


@pytest_twisted.ensureDeferred
async def test_payloads_and_audience_across_nodes(
    nodes: list[ChildServer], clients: Clients
) -> None:
    """
    A publication on node A reaches node B's subscribers with its payload
    as given (positional, keyword and binary arguments) and one publication
    id; C{exclude} and C{eligible} by session id, authid or authrole apply
    to node B's sessions; the publisher does not get its own event unless
    it asks. A marker every subscriber gets ends each check.
    """
    a, b = nodes
    publisher = await clients.join(a.ws_url)
    near = await clients.join(a.ws_url, serializer="msgpack")
    far = [await clients.join(b.ws_url, serializer=s) for s in ("json", "cbor")]
    queues: dict[str, DeferredQueue[Any]] = {}
    for name, client in (
        ("publisher", publisher),
        ("near", near),
        ("far0", far[0]),
        ("far1", far[1]),
    ):
        queue: DeferredQueue[Any] = DeferredQueue()
        queues[name] = queue
        await client.session.subscribe(lambda *a, q=queue, **k: q.put((a, k)), "cluster.topic")

    async def publish(*args: Any, **options: Any) -> int:
        kwargs = options.pop("kwargs", {})
        published = await publisher.session.publish(
            "cluster.topic", *args, options=PublishOptions(acknowledge=True, **options), **kwargs
        )
        return int(published.id)

    async def received(name: str) -> list[Any]:
        got = []
        while (event := await within(queues[name].get()))[0] != ("marker",):
            got.append(event)
        return got

    await publish(1, b"\x00\x01", kwargs={"k": [1.5]})
    await publish("not b0", exclude=[far[0].id], exclude_me=False)
    await publish("only b1", eligible=[far[1].id])
    await publish("by authid", eligible_authid=[far[0].details.authid])
    await publish("marker", exclude_me=False)

    shape = ((1, b"\x00\x01"), {"k": [1.5]})
    assert await received("publisher") == [(("not b0",), {})]
    assert await received("near") == [shape, (("not b0",), {})]
    assert await received("far0") == [shape, (("by authid",), {})]
    assert await received("far1") == [shape, (("not b0",), {}), (("only b1",), {})]


@pytest_twisted.ensureDeferred
async def test_history_across_nodes(nodes: list[ChildServer], clients: Clients) -> None:
    """
    Events published on node A are in the event history a subscriber of
    node B reads (from Redis), with their publication ids and payloads.
    """
    a, b = nodes
    publisher = await clients.join(a.ws_url)
    subscriber = await clients.join(b.ws_url)
    subscription = await subscriber.session.subscribe(lambda *a, **k: None, "cluster.history")
    ids = [
        (
            await publisher.session.publish(
                "cluster.history", n, options=PublishOptions(acknowledge=True), n=n
            )
        ).id
        for n in range(3)
    ]

    events = await subscriber.session.call("wamp.subscription.get_events", subscription.id)

    assert [(e["publication"], e["args"], e["kwargs"]) for e in events] == [
        (ids[n], [n], {"n": n}) for n in range(3)
    ]


async def until_known(client: Any, procedure: str, callees: int = 1) -> None:
    """
    Wait until C{client}'s node knows C{callees} callees of C{procedure}
    (registrations travel between nodes as control messages).
    """
    for _ in range(200):
        registration = await client.session.call("wamp.registration.lookup", procedure)
        if registration is not None:
            count = await client.session.call("wamp.registration.count_callees", registration)
            if count >= callees:
                return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"{procedure} did not reach the other node")


@pytest_twisted.ensureDeferred
async def test_calls_across_nodes(nodes: list[ChildServer], clients: Clients) -> None:
    """
    A callee on node B answers callers on node A, WAMP and JSON dialect,
    with payloads passing unchanged; its caller is identified on request.
    """
    a, b = nodes
    callee = await clients.join(b.ws_url)
    await callee.session.register(
        lambda *args, details, **kwargs: CallResult(*args, caller=details.caller, **kwargs),
        "cluster.echo",
        RegisterOptions(details_arg="details"),
    )
    caller = await clients.join(a.ws_url, serializer="msgpack")
    await until_known(caller, "cluster.echo")
    json_client = await within(ensureDeferred(connect_client(a.ws_url)))
    await within(ensureDeferred(json_client.next_message()))

    result = await caller.session.call("cluster.echo", 1, b"\x02", k="v")
    reply = await within(
        ensureDeferred(
            json_client.request(
                {"type": "invoke", "id": 1, "channel": "cluster.echo", "data": {"x": 1}}
            )
        )
    )

    assert (tuple(result.results), result.kwresults) == ((1, b"\x02"), {"k": "v", "caller": None})
    assert reply["data"] == {"args": [{"x": 1}], "kwargs": {"caller": None}}


@pytest_twisted.ensureDeferred
async def test_shared_registration_across_nodes(nodes: list[ChildServer], clients: Clients) -> None:
    """
    A round-robin registration shared by a callee on each node alternates
    between them.
    """
    a, b = nodes
    near = await clients.join(a.ws_url)
    await near.session.register(lambda: "a", "cluster.rr", RegisterOptions(invoke="roundrobin"))
    far = await clients.join(b.ws_url)
    await until_known(far, "cluster.rr")
    await far.session.register(lambda: "b", "cluster.rr", RegisterOptions(invoke="roundrobin"))
    await until_known(near, "cluster.rr", callees=2)

    results = [await near.session.call("cluster.rr") for _ in range(4)]

    assert results == ["a", "b", "a", "b"]


class Hanging:
    def __init__(self) -> None:
        self.interrupted: Deferred[str] = Deferred()

    def __call__(self, *args: Any) -> Deferred[Any]:
        return Deferred(lambda _: self.interrupted.callback("interrupted"))


@pytest_twisted.ensureDeferred
async def test_timeout_and_interrupt_across_nodes(
    nodes: list[ChildServer], clients: Clients
) -> None:
    """
    A call from node A to a callee on node B that does not answer times
    out on A, and the callee on B is interrupted.
    """
    a, b = nodes
    hanging = Hanging()
    callee = await clients.join(b.ws_url)
    await callee.session.register(hanging, "cluster.slow")
    caller = await clients.join(a.ws_url)
    await until_known(caller, "cluster.slow")

    with pytest.raises(ApplicationError) as timed_out:
        await within(caller.session.call("cluster.slow", options=CallOptions(timeout=300)))

    assert timed_out.value.error == "wamp.error.timeout"
    assert await within(hanging.interrupted) == "interrupted"


@pytest_twisted.ensureDeferred
async def test_callee_node_going_away(
    nodes: list[ChildServer], clients: Clients, tmp_path: Path
) -> None:
    """
    When a callee's node stops, calls waiting on it fail with
    C{cluso.error.callee_lost} and its registrations are gone elsewhere.
    """
    a, _ = nodes
    prefix = nodes_prefix(a)
    c = start_twistd(tmp_path, "--sources", "", "--redis", REDIS, "--redis-prefix", prefix)
    try:
        callee = await clients.join(c.ws_url)
        await callee.session.register(Hanging(), "cluster.doomed")
        caller = await clients.join(a.ws_url)
        await until_known(caller, "cluster.doomed")
        pending = caller.session.call("cluster.doomed")
        await deferLater(reactor, 0.2, lambda: None)
    finally:
        stop_child_server(c)

    with pytest.raises(ApplicationError) as lost:
        await within(pending)
    gone = await caller.session.call("wamp.registration.lookup", "cluster.doomed")

    assert lost.value.error == "cluso.error.callee_lost"
    assert gone is None
