"""
WAMP v2 on C{/ws}, tested with real third-party clients: Autobahn's Python
WAMP client (C{autobahn.twisted.component}), AutobahnJS in Node.js, and a
raw WebSocket client for messages no well-behaved client sends.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.component import Component
from autobahn.twisted.wamp import ApplicationRunner, ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import create_transport_serializer
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions
from support.rawws import upgrade_request
from support.servers import TEST_TOKEN, serve
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, ensureDeferred
from twisted.internet.threads import deferToThread

from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.testing import WebSocketTestClient, connect_client
from cluso_router.ws.protocol import ClusoWebSocketFactory

TIMEOUT = 5.0
TOKEN = "wamp-ticket-token-0123456789"
HELLO = [1, "cluso", {"roles": {"subscriber": {}, "publisher": {}, "caller": {}}}]


def within(d: Deferred[Any], timeout: float = TIMEOUT) -> Deferred[Any]:
    return d.addTimeout(timeout, reactor)


class Joined:
    """
    A WAMP session of Autobahn's Python client, and how it ended.
    """

    def __init__(self, session: ApplicationSession, details: Any, left: Deferred[Any]) -> None:
        self.session = session
        self.details = details
        self.left = left

    @property
    def id(self) -> int:
        return int(self.session._session_id)


Join = Callable[..., Awaitable[Joined]]


@pytest_twisted.async_yield_fixture
async def join() -> AsyncIterator[Join]:
    """
    Joins Autobahn Python clients to a router: a C{Component} (with ticket
    authentication when given a ticket), or with C{headers} or a batched
    serializer an C{ApplicationRunner} (Autobahn's component takes
    neither). Leaves them after the test.
    """
    joined: list[Joined] = []

    async def connect(
        url: str,
        realm: str = "cluso",
        ticket: str | None = None,
        headers: dict[str, str] | None = None,
        serializer: str = "json",
    ) -> Joined:
        opened: Deferred[tuple[ApplicationSession, Any]] = Deferred()
        left: Deferred[Any] = Deferred()

        def fail(failure: Any) -> None:
            if not opened.called:
                opened.errback(failure)

        if headers is None and not serializer.endswith(".batched"):
            transport: dict[str, Any] = (
                {"type": "rawsocket", "url": url, "serializer": serializer}
                if url.startswith("rs://")
                else {"type": "websocket", "url": url, "serializers": [serializer]}
            )
            component = Component(
                transports=[{**transport, "max_retries": 0}],
                realm=realm,
                authentication={"ticket": {"authid": "tester", "ticket": ticket}}
                if ticket
                else None,
            )
            component.on_join(lambda session, details: opened.callback((session, details)))
            component.on_leave(
                lambda session, details: None if left.called else left.callback(details)
            )
            component.start(reactor).addErrback(fail)
        else:

            class Session(ApplicationSession):
                def onJoin(self, details: Any) -> None:
                    opened.callback((self, details))

                def onLeave(self, details: Any) -> None:
                    if not left.called:
                        left.callback(details)
                    super().onLeave(details)

            # Autobahn's component takes neither headers nor batched serializers.
            runner = ApplicationRunner(
                url,
                realm,
                headers=headers,
                serializers=[create_transport_serializer(serializer)],
            )
            runner.run(Session, start_reactor=False, auto_reconnect=False).addErrback(fail)
        session, details = await within(opened)
        client = Joined(session, details, left)
        joined.append(client)
        return client

    yield connect
    for client in joined:
        if client.session.is_attached():
            client.session.leave()
            await within(client.left)


def handshake_answer(port: int, protocols: str) -> tuple[int, str]:
    """
    The status and the whole text of the answer to a WebSocket handshake
    asking for C{protocols} (blocking: run it in a thread).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        request = upgrade_request("127.0.0.1", port).replace(
            b"\r\n\r\n", f"\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n".encode()
        )
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split()[1]), answer.decode("utf-8", "replace")


async def connect_raw(url: str) -> WebSocketTestClient:
    """
    A plain WebSocket client that asks for C{wamp.2.json} and sends
    whatever it is told to.
    """
    client = await within(ensureDeferred(connect_client(url, protocols=["wamp.2.json"])))
    assert client.protocol.websocket_protocol_in_use == "wamp.2.json"
    return client


async def raw_session(url: str) -> WebSocketTestClient:
    client = await connect_raw(url)
    client.send_json(HELLO)
    welcome = await client.next_message()
    assert welcome[0] == 2, welcome
    return client


async def subscribe_json(url: str, channel: str) -> WebSocketTestClient:
    client = await connect_client(url)
    await client.next_message()
    reply = await client.request({"type": "subscribe", "channel": channel, "id": 1})
    assert reply["data"]["status"] == "subscribed"
    return client


@pytest_twisted.ensureDeferred
async def test_welcome_and_file_change_event(server: Any, join: Join) -> None:
    """
    Autobahn's client joins realm C{cluso} with a random 53-bit session id
    and the broker and dealer features announced, subscribes to the
    C{files} topic and receives a file change as the event's one argument.
    """
    client = await join(server.ws_url)
    assert 1 <= client.id <= 2**53
    assert client.details.realm == "cluso"
    roles = client.session._router_roles
    assert roles["broker"].pattern_based_subscription
    assert roles["dealer"].progressive_call_results
    events: DeferredQueue[Any] = DeferredQueue()
    await client.session.subscribe(events.put, "files")

    server.service.broadcaster.file_changed("src/app.py", "change")

    event = await within(events.get())
    assert (event["file"], event["event"]) == ("src/app.py", "change")


@pytest_twisted.ensureDeferred
async def test_publish_reaches_json_client_and_back(server: Any, join: Join) -> None:
    """
    A WAMP publish (acknowledged) reaches a JSON-dialect subscriber of the
    same channel, and a JSON-dialect send reaches the WAMP subscriber: both
    dialects see the same events.
    """
    client = await join(server.ws_url)
    json_client = await subscribe_json(server.ws_url, "chat.room")
    events: DeferredQueue[Any] = DeferredQueue()
    await client.session.subscribe(events.put, "chat.room")

    publication = await client.session.publish(
        "chat.room", {"text": "from wamp"}, options=PublishOptions(acknowledge=True)
    )
    json_client.send_json({"type": "send", "channel": "chat.room", "data": {"text": "from json"}})

    assert 1 <= publication.id <= 2**53
    first = await json_client.next_message()
    assert (first["type"], first["channel"], first["data"]) == (
        "event",
        "chat.room",
        {"text": "from wamp"},
    )
    assert await within(events.get()) == {"text": "from json"}


@pytest_twisted.ensureDeferred
async def test_publisher_exclusion_and_eligibility(server: Any, join: Join) -> None:
    """
    A publisher does not get its own event unless it sets C{exclude_me}
    false, C{exclude} leaves out the sessions named, C{eligible} delivers
    only to them. Each check ends with a marker event every subscriber
    gets, so a wrongly delivered event would arrive before it.
    """
    a = await join(server.ws_url)
    b = await join(server.ws_url)
    got: dict[str, DeferredQueue[Any]] = {"a": DeferredQueue(), "b": DeferredQueue()}
    await a.session.subscribe(got["a"].put, "t")
    await b.session.subscribe(got["b"].put, "t")

    async def publish(value: str, **options: Any) -> None:
        await a.session.publish("t", value, options=PublishOptions(acknowledge=True, **options))

    async def received(name: str) -> list[str]:
        values = []
        while (value := await within(got[name].get())) != "marker":
            values.append(value)
        return values

    await publish("default")
    await publish("not me", exclude_me=False)
    await publish("exclude b", exclude_me=False, exclude=[b.id])
    await publish("only b", exclude_me=False, eligible=[b.id])
    await publish("marker", exclude_me=False)

    assert await received("a") == ["not me", "exclude b"]
    assert await received("b") == ["default", "not me", "only b"]


@pytest_twisted.ensureDeferred
async def test_pattern_subscriptions_get_one_event_each(server: Any, join: Join) -> None:
    """
    Prefix and wildcard subscriptions matching one event each deliver it,
    with the concrete topic in the details and the same publication id.
    """
    client = await join(server.ws_url)
    events: DeferredQueue[tuple[str, Any]] = DeferredQueue()

    def on_event(kind: str) -> Callable[..., None]:
        return lambda value, details: events.put((kind, value, details.topic, details.publication))

    await client.session.subscribe(
        on_event("prefix"), "build.", SubscribeOptions(match="prefix", details_arg="details")
    )
    await client.session.subscribe(
        on_event("wildcard"),
        "build..done",
        SubscribeOptions(match="wildcard", details_arg="details"),
    )

    server.service.router.publish("build.web.done", {"ok": True})

    received = [await within(events.get()), await within(events.get())]
    assert sorted(kind for kind, *_ in received) == ["prefix", "wildcard"]
    assert {(value["ok"], topic) for _, value, topic, _ in received} == {(True, "build.web.done")}
    assert received[0][3] == received[1][3]


@pytest_twisted.ensureDeferred
async def test_calls_server_info_and_git_status(server: Any, join: Join, tmp_path: Path) -> None:
    """
    C{server.info} and C{git.getStatus} are WAMP procedures, answering the
    same data as a JSON-dialect C{invoke}.
    """
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed; run the README's test command")
    root = Path(server.service.config.root)
    subprocess.run([git, "init", "-q", str(root)], check=True)
    (root / "new.txt").write_text("hello\n")
    client = await join(server.ws_url)
    json_client = await connect_client(server.ws_url)
    await json_client.next_message()

    info = await client.session.call("server.info")
    status = await client.session.call("git.getStatus")
    reply = await json_client.request({"type": "invoke", "id": 7, "channel": "git.getStatus"})

    assert info["cwd"] == str(root)
    assert "git.getStatus" in info["procedures"]
    assert {"file": "new.txt", "status": "??"} in status["files"]
    assert status == reply["data"]


@pytest_twisted.ensureDeferred
async def test_call_errors_map_to_wamp_error_uris(server: Any, join: Join) -> None:
    """
    An unknown procedure fails with C{wamp.error.no_such_procedure}, a
    procedure's own error with C{cluso.error.<code>}; the message is the
    error's first argument.
    """
    from cluso_router.router.procedures import ProcedureError

    def refuse(data: Any) -> None:
        raise ProcedureError(f"cannot use {data}", "bad_input")

    server.service.router.register("test.refuse", refuse)
    client = await join(server.ws_url)

    with pytest.raises(ApplicationError) as unknown:
        await client.session.call("no.such.thing")
    with pytest.raises(ApplicationError) as refused:
        await client.session.call("test.refuse", "x")

    assert unknown.value.error == "wamp.error.no_such_procedure"
    assert unknown.value.args == ("No such procedure: no.such.thing",)
    assert refused.value.error == "cluso.error.bad_input"
    assert refused.value.args == ("cannot use x",)


@pytest_twisted.ensureDeferred
async def test_wamp_callee_invoked_by_json_client(server: Any, join: Join) -> None:
    """
    A procedure a WAMP client registers is one a JSON-dialect client can
    invoke: its data is the callee's one argument, the callee's result is
    the reply's data and its error the reply's error and code. Once the
    callee leaves, the procedure is gone.
    """
    callee = await join(server.ws_url)

    def add(data: dict[str, int]) -> int:
        if "b" not in data:
            raise ApplicationError("com.example.error.missing_b", "b is missing")
        return data["a"] + data["b"]

    await callee.session.register(add, "calc.add")
    json_client = await connect_client(server.ws_url)
    await json_client.next_message()

    ok = await json_client.request(
        {"type": "invoke", "id": 1, "channel": "calc.add", "data": {"a": 2, "b": 3}}
    )
    bad = await json_client.request(
        {"type": "invoke", "id": 2, "channel": "calc.add", "data": {"a": 2}}
    )
    callee.session.leave()
    await within(callee.left)
    gone = await json_client.request({"type": "invoke", "id": 3, "channel": "calc.add"})

    assert ok["data"] == 5
    assert (bad["error"], bad["code"]) == ("b is missing", "com_example_error_missing_b")
    assert gone["code"] == "no_such_procedure"


@pytest_twisted.ensureDeferred
async def test_wamp_callee_called_by_wamp_client(server: Any, join: Join) -> None:
    """
    Between WAMP clients, arguments, keyword arguments and error URIs pass
    through unchanged, and a callee's progressive results reach a caller
    that asked for them, in order, before the result.
    """
    callee = await join(server.ws_url)
    caller = await join(server.ws_url)

    def scale(a: int, b: int, *, factor: int = 1) -> int:
        return (a + b) * factor

    def count(n: int, details: Any = None) -> str:
        for i in range(n):
            details.progress(i)
        return "counted"

    def fail() -> None:
        raise ApplicationError("com.example.oops", "no", reason=42)

    await callee.session.register(scale, "calc.scale")
    await callee.session.register(count, "calc.count", RegisterOptions(details_arg="details"))
    await callee.session.register(fail, "calc.fail")
    progress: list[int] = []

    scaled = await caller.session.call("calc.scale", 2, 3, factor=10)
    counted = await caller.session.call(
        "calc.count", 3, options=CallOptions(on_progress=progress.append)
    )
    with pytest.raises(ApplicationError) as failed:
        await caller.session.call("calc.fail")

    assert scaled == 50
    assert (counted, progress) == ("counted", [0, 1, 2])
    assert (failed.value.error, failed.value.args, failed.value.kwargs) == (
        "com.example.oops",
        ("no",),
        {"reason": 42},
    )


@pytest_twisted.ensureDeferred
async def test_router_procedure_progressive_results(server: Any, join: Join) -> None:
    """
    A router procedure that declares C{progress} streams progressive
    results to a WAMP caller that asked for them; a caller that did not
    ask gets only the result, and the procedure is called without it.
    """
    calls: list[bool] = []

    async def stream(data: Any, *, progress: Callable[[Any], None] | None = None) -> str:
        calls.append(progress is not None)
        for word in data.split():
            if progress is not None:
                progress({"chunk": word})
        return data.upper()

    server.service.router.register("test.stream", stream)
    client = await join(server.ws_url)
    chunks: list[Any] = []

    streamed = await client.session.call(
        "test.stream", "one two three", options=CallOptions(on_progress=chunks.append)
    )
    plain = await client.session.call("test.stream", "four")

    assert streamed == "ONE TWO THREE"
    assert chunks == [{"chunk": "one"}, {"chunk": "two"}, {"chunk": "three"}]
    assert (plain, calls) == ("FOUR", [True, False])


@pytest_twisted.ensureDeferred
async def test_goodbye_and_shutdown(server: Any, join: Join) -> None:
    """
    Leaving with GOODBYE drops the session's subscriptions and
    registrations; a server shutdown says GOODBYE with
    C{wamp.close.system_shutdown} before closing.
    """
    router = server.service.router
    leaving = await join(server.ws_url)
    await leaving.session.subscribe(lambda _: None, "leaving.topic")
    await leaving.session.register(lambda: None, "leaving.proc")
    staying = await join(server.ws_url)

    leaving.session.leave()
    left = await within(leaving.left)
    assert left.reason == "wamp.close.goodbye_and_out"
    assert "leaving.topic" not in router.subscriber_counts()
    assert "leaving.proc" not in router.procedures

    await router.close_all(1001, "server shutting down")
    assert (await within(staying.left)).reason == "wamp.close.system_shutdown"


@pytest_twisted.ensureDeferred
async def test_ticket_authentication(tmp_path: Path, join: Join) -> None:
    """
    With a token, a WAMP client joins by ticket authentication (CHALLENGE,
    AUTHENTICATE) without the token in the handshake, a wrong ticket or no
    ticket method gets ABORT; a JSON-dialect client without the token is
    still refused at the handshake.
    """
    router = Router(cwd=str(tmp_path))
    port = reactor.listenTCP(
        0, ClusoWebSocketFactory(router, policy=AccessPolicy(TOKEN)), interface="127.0.0.1"
    )
    url = f"ws://127.0.0.1:{port.getHost().port}/ws"
    try:
        client = await join(url, ticket=TOKEN)
        info = await client.session.call("server.info")

        wrong = await connect_raw(url)
        wrong.send_json([1, "cluso", {"roles": {"caller": {}}, "authmethods": ["ticket"]}])
        challenge = await wrong.next_message()
        wrong.send_json([5, "not-the-token", {}])
        refused = await wrong.next_message()
        no_method = await connect_raw(url)
        no_method.send_json(HELLO)
        aborted = await no_method.next_message()
        with pytest.raises(ConnectionError):
            await connect_client(url)

        assert (client.details.authmethod, client.details.authrole) == ("ticket", "user")
        assert info["cwd"] == str(tmp_path)
        assert challenge == [4, "ticket", {}]
        assert refused[0] == 3
        assert refused[2] == "wamp.error.authentication_failed"
        assert aborted[2] == "wamp.error.no_auth_method"
    finally:
        await router.close_all(1001, "test over")
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_token_on_the_bundled_server(secured_server: Any, join: Join) -> None:
    """
    On the whole server with auth on (the default), a WAMP client joins
    with the token in its handshake or, without it, by ticket; one with
    neither is refused in WAMP, and a JSON-dialect client without the token
    at the handshake.
    """
    url = secured_server.ws_url
    by_header = await join(url, headers=secured_server.headers)
    by_ticket = await join(url, ticket=secured_server.token)
    neither = await connect_raw(url)
    neither.send_json(HELLO)
    aborted = await neither.next_message()

    assert by_header.details.authmethod == "token"
    assert by_ticket.details.authmethod == "ticket"
    assert (await by_ticket.session.call("server.info"))[
        "cwd"
    ] == secured_server.service.config.root
    assert aborted[2] == "wamp.error.no_auth_method"
    with pytest.raises(ConnectionError):
        await connect_client(url)


@pytest_twisted.ensureDeferred
async def test_invalid_messages_get_abort_or_error(server: Any) -> None:
    """
    Garbage, an unknown message type, SUBSCRIBE before HELLO, a wrong realm
    and a binary frame get ABORT and a close; a bad request of a joined
    session gets ERROR (a bad unacknowledged PUBLISH nothing) and the
    session goes on; the server stays up.
    """
    cases = {
        "garbage": b"{not json",
        "not a list": b'{"type": "subscribe"}',
        "unknown type": b"[99, 1]",
        "subscribe first": b'[32, 1, {}, "files"]',
        "wrong realm": json.dumps([1, "elsewhere", {"roles": {"caller": {}}}]).encode(),
    }
    reasons = {}
    for name, payload in cases.items():
        client = await connect_raw(server.ws_url)
        client.send_raw(payload)
        abort = await client.next_message()
        reasons[name] = (abort[0], abort[2], (await within(client.closed))[1])
    binary = await raw_session(server.ws_url)
    binary.send_raw(b"\x01\x02", binary=True)
    abort = await binary.next_message()
    reasons["binary"] = (abort[0], abort[2], (await within(binary.closed))[1])

    joined = await raw_session(server.ws_url)
    joined.send_json([32, 7, {}, "bad topic"])
    bad_uri = await joined.next_message()
    joined.send_json([34, 8, 12345])
    no_such = await joined.next_message()
    joined.send_json([16, 10, {}, "bad topic", ["unacknowledged, so no answer"]])
    joined.send_json([48, 9, {}, "server.info"])
    result = await joined.next_message()

    violation = "wamp.error.protocol_violation"
    assert reasons == {
        "garbage": (3, violation, 1000),
        "not a list": (3, violation, 1000),
        "unknown type": (3, violation, 1000),
        "subscribe first": (3, violation, 1000),
        "wrong realm": (3, "wamp.error.no_such_realm", 1000),
        "binary": (3, violation, 1000),
    }
    assert bad_uri[:4] == [8, 32, 7, {}]
    assert bad_uri[4] == "wamp.error.invalid_uri"
    assert no_such[:5] == [8, 34, 8, {}, "wamp.error.no_such_subscription"]
    assert result[:2] == [50, 9]
    assert result[3][0]["cwd"] == server.service.config.root


@pytest_twisted.ensureDeferred
async def test_cancel_answers_at_once(server: Any) -> None:
    """
    CANCEL of a pending call answers it with C{wamp.error.canceled}; the
    procedure's late result is not sent.
    """
    pending: Deferred[str] = Deferred()
    server.service.router.register("test.slow", lambda data: pending)
    client = await raw_session(server.ws_url)

    client.send_json([48, 1, {}, "test.slow"])
    client.send_json([49, 1, {}])
    canceled = await client.next_message()
    pending.callback("late")
    client.send_json([48, 2, {}, "server.info"])
    following = await client.next_message()

    assert canceled[:5] == [8, 48, 1, {}, "wamp.error.canceled"]
    assert following[:2] == [50, 2]


#: The four shapes of a WAMP payload (positional, keyword arguments) and the
#: JSON dialect's value for each.
SHAPES = [
    (({"file": "a.py"},), {}, {"file": "a.py"}),
    ((1, "x"), {}, {"args": [1, "x"], "kwargs": {}}),
    ((), {"k": "v"}, {"args": [], "kwargs": {"k": "v"}}),
    ((1, 2), {"k": "v"}, {"args": [1, 2], "kwargs": {"k": "v"}}),
]


@pytest_twisted.ensureDeferred
async def test_payload_shapes_through_pubsub(server: Any, join: Join) -> None:
    """
    Each payload shape a WAMP publisher gives reaches a WAMP subscriber
    unchanged and a JSON-dialect subscriber as its mapped value; each
    mapped value a JSON-dialect client sends reaches the WAMP subscriber as
    the shape it stands for.
    """
    publisher = await join(server.ws_url)
    subscriber = await join(server.ws_url)
    json_client = await subscribe_json(server.ws_url, "shapes")
    events: DeferredQueue[tuple[Any, Any]] = DeferredQueue()
    await subscriber.session.subscribe(lambda *a, **k: events.put((a, k)), "shapes")

    from_wamp, to_json = [], []
    for args, kwargs, _ in SHAPES:
        await publisher.session.publish(
            "shapes", *args, options=PublishOptions(acknowledge=True), **kwargs
        )
        from_wamp.append(await within(events.get()))
        to_json.append((await json_client.next_message())["data"])
    from_json = []
    for _, _, data in SHAPES:
        json_client.send_json({"type": "send", "channel": "shapes", "data": data})
        from_json.append(await within(events.get()))

    shapes = [(args, kwargs) for args, kwargs, _ in SHAPES]
    assert from_wamp == shapes
    assert to_json == [data for _, _, data in SHAPES]
    assert from_json == shapes


@pytest_twisted.ensureDeferred
async def test_payload_shapes_through_rpc(server: Any, join: Join) -> None:
    """
    Each payload shape passes unchanged from a WAMP caller to a WAMP callee
    and back; a JSON-dialect client invoking the callee with a mapped value
    calls it with the shape it stands for and gets the callee's shape back
    as its mapped value; a router procedure called by a WAMP caller gets
    the mapped value and its result comes back as the shape it stands for.
    """
    from autobahn.wamp.types import CallResult

    callee = await join(server.ws_url)
    caller = await join(server.ws_url)
    seen: list[tuple[Any, Any]] = []

    def echo(*args: Any, **kwargs: Any) -> Any:
        seen.append((args, kwargs))
        return CallResult(*args, **kwargs)

    await callee.session.register(echo, "shapes.echo")
    server.service.router.register("shapes.data", lambda data: data)
    json_client = await connect_client(server.ws_url)
    await json_client.next_message()

    def shape(result: Any) -> tuple[Any, Any]:
        if isinstance(result, CallResult):
            return tuple(result.results), result.kwresults
        return (result,), {}

    wamp_results, json_results, router_results = [], [], []
    for request, (args, kwargs, data) in enumerate(SHAPES):
        wamp_results.append(shape(await caller.session.call("shapes.echo", *args, **kwargs)))
        reply = await json_client.request(
            {"type": "invoke", "id": request, "channel": "shapes.echo", "data": data}
        )
        json_results.append(reply["data"])
        router_results.append(shape(await caller.session.call("shapes.data", *args, **kwargs)))

    shapes = [(args, kwargs) for args, kwargs, _ in SHAPES]
    assert wamp_results == shapes
    assert seen == [shape for pair in zip(shapes, shapes, strict=True) for shape in pair]
    assert json_results == [data for _, _, data in SHAPES]
    assert router_results == shapes


@pytest_twisted.ensureDeferred
async def test_operations_take_positional_and_keyword_arguments(server: Any, join: Join) -> None:
    """
    A files operation called over WAMP takes its parameters as one object,
    as positional arguments, as keyword arguments or both mixed.
    """
    root = Path(server.service.config.root)
    (root / "a.txt").write_text("one")
    client = await join(server.ws_url)

    as_object = await client.session.call("files.writeFile", {"path": "b.txt", "content": "x"})
    positional = await client.session.call("files.writeFile", "c.txt", "y")
    keywords = await client.session.call("files.writeFile", path="d.txt", content="z")
    mixed = await client.session.call("files.writeFile", "e.txt", content="w")

    assert all(result is not None for result in (as_object, positional, keywords, mixed))
    assert [(root / f"{n}.txt").read_text() for n in "bcde"] == ["x", "y", "z", "w"]


SERIALIZERS = ["json", "msgpack", "cbor", "json.batched", "msgpack.batched", "cbor.batched"]


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest_twisted.ensureDeferred
async def test_every_serializer(server: Any, join: Join, serializer: str) -> None:
    """
    A client of each serializer joins (the subprotocol it asked for is the
    one chosen) and exchanges every payload shape, binary values included,
    with a JSON client, both ways, through pub/sub and calls.
    """
    from autobahn.wamp.types import CallResult

    client = await join(server.ws_url, serializer=serializer)
    other = await join(server.ws_url)
    assert client.session._transport.websocket_protocol_in_use == f"wamp.2.{serializer}"
    received: dict[str, DeferredQueue[Any]] = {"client": DeferredQueue(), "other": DeferredQueue()}
    await client.session.subscribe(lambda *a, **k: received["client"].put((a, k)), "ser")
    await other.session.subscribe(lambda *a, **k: received["other"].put((a, k)), "ser")
    await client.session.register(lambda *a, **k: CallResult(*a, **k), "ser.echo")
    await other.session.register(lambda *a, **k: CallResult(*a, **k), "ser.echo2")
    shapes = [(args, kwargs) for args, kwargs, _ in SHAPES] + [((b"\x00\xff",), {"b": b"x"})]

    def shape(result: Any) -> tuple[Any, Any]:
        if isinstance(result, CallResult):
            return tuple(result.results), result.kwresults
        return (result,), {}

    got = []
    for args, kwargs in shapes:
        for sender, receiver in ((client, "other"), (other, "client")):
            await sender.session.publish(
                "ser", *args, options=PublishOptions(acknowledge=True), **kwargs
            )
            got.append(await within(received[receiver].get()))
        got.append(shape(await client.session.call("ser.echo2", *args, **kwargs)))
        got.append(shape(await other.session.call("ser.echo", *args, **kwargs)))

    assert got == [shape for shape in shapes for _ in range(4)]


@pytest_twisted.ensureDeferred
async def test_unsupported_subprotocol_is_refused_clearly(secured_server: Any) -> None:
    """
    A handshake offering only WAMP serializers the router lacks is refused
    with 400 naming them and the ones it speaks, also without the token
    (not as a missing token).
    """
    status, answer = await within(
        deferToThread(handshake_answer, secured_server.port, "wamp.2.flatbuffers, wamp.2.yaml")
    )

    assert status == 400
    assert "wamp.2.flatbuffers" in answer
    assert "wamp.2.msgpack" in answer
    assert "API key" not in answer


@pytest_twisted.async_yield_fixture
async def rawsocket_server(tmp_path: Path) -> Any:
    """
    A whole service with the RawSocket endpoint on a free loopback port
    too, and token auth on; C{rs_url} is its RawSocket URL.
    """
    async for running in serve(
        tmp_path, token=TEST_TOKEN, listen_rawsocket="tcp:0:interface=127.0.0.1"
    ):
        endpoint = running.service.rawsocket_endpoint
        assert endpoint is not None
        assert endpoint.port is not None
        running.rs_url = f"rs://127.0.0.1:{endpoint.port.getHost().port}"
        yield running


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
@pytest_twisted.ensureDeferred
async def test_rawsocket(rawsocket_server: Any, join: Join, serializer: str) -> None:
    """
    A RawSocket client authenticates by ticket (there is no HTTP handshake
    to carry the token), and exchanges events and calls with a WebSocket
    client of the same realm.
    """
    from autobahn.wamp.types import CallResult

    token = rawsocket_server.token
    raw = await join(rawsocket_server.rs_url, ticket=token, serializer=serializer)
    web = await join(rawsocket_server.ws_url, ticket=token)
    events: DeferredQueue[Any] = DeferredQueue()
    await raw.session.subscribe(lambda *a, **k: events.put((a, k)), "rs")
    await raw.session.register(lambda *a, **k: CallResult(*a, **k), "rs.echo")

    await web.session.publish("rs", 1, b"\x01", options=PublishOptions(acknowledge=True), k="v")
    result = await web.session.call("rs.echo", 2, k=[3])

    assert raw.details.authmethod == "ticket"
    assert await within(events.get()) == ((1, b"\x01"), {"k": "v"})
    assert (tuple(result.results), result.kwresults) == ((2,), {"k": [3]})


@pytest_twisted.ensureDeferred
async def test_json_client_invokes_pattern_and_shared_registrations(
    server: Any, join: Join
) -> None:
    """
    A JSON-dialect client's invoke reaches the WAMP registration a WAMP
    caller's CALL would: a prefix registration, and a shared one in turn.
    """
    from autobahn.wamp.types import CallResult

    a = await join(server.ws_url)
    b = await join(server.ws_url)
    await a.session.register(
        lambda *args, details: CallResult(details.procedure, *args),
        "calc.",
        RegisterOptions(match="prefix", details_arg="details"),
    )
    await a.session.register(lambda *_: "a", "turns", RegisterOptions(invoke="roundrobin"))
    await b.session.register(lambda *_: "b", "turns", RegisterOptions(invoke="roundrobin"))
    json_client = await connect_client(server.ws_url)
    await json_client.next_message()

    prefixed = await json_client.request(
        {"type": "invoke", "id": 1, "channel": "calc.add", "data": [1, 2]}
    )
    turns = [
        (await json_client.request({"type": "invoke", "id": n, "channel": "turns"}))["data"]
        for n in range(2, 6)
    ]

    assert prefixed["data"] == {"args": ["calc.add", [1, 2]], "kwargs": {}}
    assert turns == ["a", "b", "a", "b"]
