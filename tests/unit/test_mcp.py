"""
The MCP side in memory: messages checked at the door, tool descriptors and
schemas from the declarations (checked against the official SDK's wire
types), the tool catalog following the registries, resource reads within
their budget, and MCP clients as router sessions with the same queue,
conflation, limits and liveness as WebSocket clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest.mock import Mock

import jsonschema
import mcp_types
import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from cluso_router._json import loads
from cluso_router.mcp.protocol import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Message,
    RpcError,
    is_modern,
    parse_message,
)
from cluso_router.mcp.resources import (
    MAX_READ_BYTES,
    MAX_READ_EVENTS,
    ResourceCatalog,
    channel_of,
    channel_uri,
)
from cluso_router.mcp.schemas import input_schema, json_schema, output_schema
from cluso_router.mcp.server import PAGE_SIZE, page
from cluso_router.mcp.session import Clients
from cluso_router.mcp.tools import ToolCatalog, operation_tool
from cluso_router.router.liveness import PingSweeper
from cluso_router.router.procedures import ProcedureError
from cluso_router.router.router import Router
from cluso_router.sources.lsp.routes import diagnostics_operations
from cluso_router.sources.search.routes import (
    cancel_operation,
    files_search_operation,
    start_operation,
)
from cluso_router.sources.validation.routes import validate_operation
from cluso_router.web.resources import ApiError
from cluso_router.web.routes import Operation, Param, mount, operation_table, unmount
from cluso_router.workspace.file_routes import file_operations
from cluso_router.workspace.git_routes import git_operations
from cluso_router.ws.limits import Limits


class StreamRequest:
    """
    What a notification stream needs of a twisted.web request: it records
    what is written, holds a producer, and can finish or lose its connection.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        self._disconnected = False
        self._waiting: list[Deferred[None]] = []

    def write(self, data: bytes) -> None:
        assert not self.finished
        if not self._disconnected:
            self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def finish(self) -> None:
        self.finished = True
        for d in self._waiting:
            d.callback(None)

    def lose(self) -> None:
        self._disconnected = True
        for d in self._waiting:
            d.errback(Failure(ConnectionDone()))

    def messages(self) -> list[Any]:
        """
        The JSON-RPC messages among the written events.
        """
        events = b"".join(self.written).split(b"\n\n")
        return [loads(e.split(b"data: ", 1)[1]) for e in events if b"data: " in e]


# Messages at the door.


@pytest.mark.parametrize(
    ("body", "kind", "method", "id"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "request", "ping", 1),
        (b'{"jsonrpc":"2.0","id":"a","method":"x/y","params":{}}', "request", "x/y", "a"),
        (b'{"jsonrpc":"2.0","method":"notifications/x"}', "notification", "notifications/x", None),
        (b'{"jsonrpc":"2.0","id":7,"result":{}}', "response", None, 7),
    ],
)
def test_messages_are_read_by_kind(body: bytes, kind: str, method: str | None, id: Any) -> None:
    """
    A request has a method and an id, a notification a method only, a
    response an id and a result.
    """
    message = parse_message(body)
    assert (message.kind, message.method, message.id) == (kind, method, id)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", PARSE_ERROR),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":NaN}}', PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST),
        (b'{"id":1,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1}', INVALID_REQUEST),
    ],
)
def test_bad_messages_are_refused_with_400_and_a_code(body: bytes, code: int) -> None:
    """
    Anything but one strict JSON-RPC 2.0 object with a string or integer
    id and object params is refused before anything reads it.
    """
    with pytest.raises(RpcError) as raised:
        parse_message(body)
    assert (raised.value.code, raised.value.status) == (code, 400)


def test_the_revision_is_read_from_the_header_or_the_meta() -> None:
    """
    A request speaks 2026-07-28 when its header names a revision without a
    handshake or its _meta names a revision; else it is a legacy one.
    """
    plain = Message("request", "tools/list", 1)
    stamped = Message(
        "request", "tools/list", 1, {"_meta": {"io.modelcontextprotocol/protocolVersion": "x"}}
    )
    assert not is_modern(None, plain)
    assert not is_modern("2025-11-25", plain)
    assert is_modern("2026-07-28", plain)
    assert is_modern(None, stamped)


# Tools from declarations.


def declared_operations() -> list[Operation]:
    """
    Every operation the built-in parts declare, over stand-in services.
    """
    return [
        *file_operations(Mock()),
        *git_operations(Mock()),
        *diagnostics_operations(Mock()),
        validate_operation(Mock()),
        start_operation(Mock()),
        cancel_operation(Mock()),
        files_search_operation(Mock()),
    ]


@pytest.mark.parametrize("operation", declared_operations(), ids=lambda op: op.name)
def test_every_declared_operation_is_a_valid_tool(operation: Operation) -> None:
    """
    The SDK's own Tool type accepts each descriptor; its input and output
    schemas are valid JSON Schema 2020-12 with an object at the root; a
    GET operation and every read is marked read-only.
    """
    descriptor = operation_tool(operation).descriptor
    tool = mcp_types.Tool.model_validate(descriptor)
    assert tool.name == operation.procedure
    for schema in (tool.input_schema, tool.output_schema):
        if schema is not None:
            jsonschema.Draft202012Validator.check_schema(schema)
            assert schema["type"] == "object"
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is (not operation.mutates)
    if operation.method == "GET":
        assert tool.annotations.read_only_hint is True


def test_schemas_become_json_schema() -> None:
    """
    OpenAPI's nullable becomes a null type; references to components point
    into $defs, which come along; a result that is not an object goes
    under "result".
    """
    assert json_schema({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert json_schema({"items": {"$ref": "#/components/schemas/X"}}) == {
        "items": {"$ref": "#/$defs/X"}
    }
    node = {"type": "object", "properties": {"rule": {"type": "string", "nullable": True}}}
    listing = Operation(
        lambda: [],
        "List",
        data={"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
        schemas={"Node": node},
    )
    schema = output_schema(listing)
    assert schema is not None
    assert schema["required"] == ["result"]
    assert schema["$defs"]["Node"]["properties"]["rule"]["type"] == ["string", "null"]
    jsonschema.Draft202012Validator(schema).validate({"result": [{"rule": None}]})
    read = Operation(
        lambda: {},
        "Read",
        data={"$ref": "#/components/schemas/File"},
        schemas={"File": {"type": "object", "required": ["path"], "properties": {"path": {}}}},
    )
    assert output_schema(read) == {
        "type": "object",
        "required": ["path"],
        "properties": {"path": {}},
        "$defs": {"File": {"type": "object", "required": ["path"], "properties": {"path": {}}}},
    }
    assert input_schema(Operation(lambda: None, "Nothing")) == {"type": "object", "properties": {}}


def test_a_get_operation_cannot_mutate_and_names_come_from_paths() -> None:
    """
    Operations mutate by default unless they are GET; a GET declared
    mutating is refused; one without a procedure is named from its path.
    """
    assert Operation(lambda: None, "x").mutates is True
    assert Operation(lambda: None, "x", method="GET").mutates is False
    with pytest.raises(ValueError, match="must not change anything"):
        Operation(lambda: None, "x", method="GET", mutates=True)
    assert Operation(lambda: None, "x", paths=("/api/files/search",)).name == "files.search"


def catalog() -> tuple[ToolCatalog, Router, Resource, Clock]:
    clock = Clock()
    router = Router(clock=clock)
    root = Resource()
    return ToolCatalog(operation_table(root), router, clock), router, root, clock


def test_the_tool_list_follows_operations_and_procedures() -> None:
    """
    Mounted operations and registered procedures are tools while they are
    there; a burst of changes is announced once, after the turn; names the
    protocol does not allow are left out.
    """
    tools, router, root, clock = catalog()
    announced: list[None] = []
    tools.changes.add(lambda: announced.append(None))
    read = Operation(lambda path=None: path, "Read", paths=("/api/x/read",), procedure="x.read")
    mount(root, read)
    router.register("x.read", read.procedure_callable())
    router.register("client.add", lambda data: sum(data))
    router.register("not a tool name!", lambda data: None)
    assert announced == []
    clock.advance(0)
    assert announced == [None]
    assert [tool.name for tool in tools.tools()] == ["client.add", "server.info", "x.read"]
    assert tools.find("not a tool name!") is None
    unmount(root, read)
    router.procedures.unregister("x.read")
    router.procedures.unregister("client.add")
    clock.advance(0)
    assert len(announced) == 2
    assert [tool.name for tool in tools.tools()] == ["server.info"]
    tools.close()
    router.register("late", lambda data: None)
    clock.advance(0)
    assert len(announced) == 2


def call(tools: ToolCatalog, name: str, arguments: dict[str, Any], report: Any = None) -> Any:
    tool = tools.find(name)
    assert tool is not None
    results: list[Any] = []
    tools.call(tool, arguments, report).addBoth(results.append)
    return results[0]


def test_tool_results_and_errors_say_what_http_says() -> None:
    """
    A result is text and structured content (non-objects under result); a
    ProcedureError or ApiError is a tool error with its message; anything
    else is an internal error; a procedure without a declaration takes data.
    """
    tools, router, root, _ = catalog()

    def boom(kind: str) -> Any:
        if kind == "procedure":
            raise ProcedureError("Failed to read file: nope", "x")
        if kind == "api":
            raise ApiError("search is not available", 503)
        raise RuntimeError("disk on fire")

    mount(root, Operation(boom, "Boom", procedure="boom", params=(Param("kind"),)))
    mount(root, Operation(lambda: {"a": 1}, "Obj", procedure="obj", data={"type": "object"}))
    router.register("client.add", lambda data: sum(data))
    assert call(tools, "obj", {}) == {
        "content": [{"type": "text", "text": '{"a":1}'}],
        "structuredContent": {"a": 1},
        "isError": False,
    }
    assert call(tools, "client.add", {"data": [2, 3]})["structuredContent"] == {"result": 5}
    for kind, message in (
        ("procedure", "Failed to read file: nope"),
        ("api", "search is not available"),
        ("other", "Internal error: disk on fire"),
    ):
        result = call(tools, "boom", {"kind": kind})
        assert result == {"content": [{"type": "text", "text": message}], "isError": True}


def test_progress_is_measured_and_only_rising_steps_are_reported() -> None:
    """
    An operation's progress values are measured by its declaration and
    reported while they rise; a cancelled call fails with CancelledError
    (no tool result is made of it) and its work is cancelled.
    """
    tools, _, root, _ = catalog()
    steps: list[Callable[[Any], None]] = []
    pending: Deferred[Any] = Deferred()

    def work(progress: Any = None) -> Deferred[Any]:
        steps.append(progress)
        return pending

    mount(
        root,
        Operation(
            work,
            "Work",
            procedure="work",
            progress=lambda value, count: (value, 3, f"step {count}"),
        ),
    )
    reported: list[tuple[float, float | None, str]] = []
    tool = tools.find("work")
    assert tool is not None
    running = tools.call(tool, {}, lambda *step: reported.append(step))
    for value in (1, 1, 2, 0, 3):
        steps[0](value)
    assert reported == [(1, 3, "step 1"), (2, 3, "step 3"), (3, 3, "step 5")]
    outcome: list[Any] = []
    running.addErrback(outcome.append)
    running.cancel()
    assert pending.called
    assert isinstance(outcome[0], Failure)
    assert outcome[0].check(CancelledError)


def test_lists_come_in_pages() -> None:
    """
    A list longer than a page continues with a cursor; a cursor the server
    did not give is refused.
    """
    items = list(range(PAGE_SIZE * 2 + 50))
    first, cursor = page(items, None)
    second, cursor2 = page(items, cursor)
    third, cursor3 = page(items, cursor2)
    assert first + second + third == items
    assert (len(first), len(third), cursor3) == (PAGE_SIZE, 50, None)
    for bad in ("x", "-1", str(len(items) + 1), 3):
        with pytest.raises(RpcError):
            page(items, bad)


# Resources.


def read(resources: ResourceCatalog, uri: str) -> Any:
    results: list[Any] = []
    resources.read(uri).addBoth(results.append)
    return results[0]


def test_a_channel_read_keeps_to_its_budget() -> None:
    """
    A channel's read gives its newest events, at most MAX_READ_EVENTS and
    MAX_READ_BYTES of them, and says when some were left out.
    """
    router = Router(clock=Clock())
    resources = ResourceCatalog(router.claims, router, operation_table(Resource()))
    for n in range(MAX_READ_EVENTS + 10):
        router.publish("build/done", {"n": n})
    body = loads(read(resources, channel_uri("build/done"))[0]["text"])
    assert [e["data"]["n"] for e in body["events"]] == list(range(10, MAX_READ_EVENTS + 10))
    assert (body["seq"], body["truncated"]) == (MAX_READ_EVENTS + 10, True)
    big = "x" * (MAX_READ_BYTES // 3)
    for _ in range(4):
        router.publish("big", {"blob": big})
    body = loads(read(resources, channel_uri("big"))[0]["text"])
    assert (len(body["events"]), body["truncated"]) == (2, True)
    assert channel_of(channel_uri("build/done")) == "build/done"
    assert channel_of("cluso://channels/") is None


def test_files_need_the_files_operations_and_other_uris_are_unknown() -> None:
    """
    A file resource is read through the files.readFile operation, and its
    refusals keep the operation's message; without it, or for a URI that
    names nothing, the read fails as not found.
    """
    router = Router(clock=Clock())
    root = Resource()
    resources = ResourceCatalog(router.claims, router, operation_table(root))
    for uri in ("cluso://files/a.txt", "cluso://nothing", "https://example.com/"):
        failure = read(resources, uri)
        assert failure.value.code == -32002
    contents = {"a.txt": succeed({"content": "A\n"}), "b.txt": fail(ProcedureError("Nope: b"))}
    mount(
        root,
        Operation(
            lambda path: contents[path], "Read", procedure="files.readFile", params=(Param("path"),)
        ),
    )
    assert read(resources, "cluso://files/a.txt") == [
        {"uri": "cluso://files/a.txt", "mimeType": "text/plain", "text": "A\n"}
    ]
    assert read(resources, "cluso://files/b.txt").value.message == "Nope: b"


# Clients as router sessions.


def clients(**limits: Any) -> tuple[Clients, Router, Clock]:
    clock = Clock()
    router = Router(clock=clock)
    return Clients(router, Limits(**limits), clock, idle_timeout=100), router, clock


def test_a_legacy_session_queues_while_it_has_no_stream() -> None:
    """
    A legacy session is a router session of the mcp dialect; events for it
    wait while no GET stream is open, conflated to one notification per
    channel, and come out when a stream opens; a lost stream pauses it
    again without ending it.
    """
    mcp, router, _ = clients()
    legacy = mcp.start_session("2025-11-25")
    assert router.dialects == {"mcp": 1}
    mcp.subscribe(legacy, "cluso://channels/files")
    for n in range(5):
        router.publish("files", {"n": n})
    first = StreamRequest()
    legacy.stream.open(first)
    assert first.messages() == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": "cluso://channels/files"},
        }
    ]
    router.publish("files", {"n": 5})
    assert len(first.messages()) == 2
    first.lose()
    router.publish("files", {"n": 6})
    assert mcp.session(legacy.id) is legacy
    second = StreamRequest()
    legacy.stream.open(second)
    assert len(second.messages()) == 1
    legacy.stream.end()
    assert second.finished
    assert mcp.session(legacy.id) is None
    assert router.connection_count == 0


def test_a_session_that_lets_its_queue_overflow_is_ended() -> None:
    """
    Notifications for a session without a stream are bounded in bytes like
    a slow WebSocket client's queue: past the budget the session ends,
    leaving the router, and its calls in flight are cancelled.
    """
    mcp, router, _ = clients(max_queue_bytes=1024)
    legacy = mcp.start_session("2025-11-25")
    call: Deferred[Any] = Deferred()
    legacy.calls[1] = call
    call.addErrback(lambda f: None)
    for n in range(40):
        mcp.subscribe(legacy, channel_uri(f"channel-{n}"))
    for n in range(40):
        router.publish(f"channel-{n}", {})
    assert mcp.session(legacy.id) is None
    assert router.connection_count == 0
    assert router.queue_counters.slow_consumer_closes == 1
    assert call.called


def test_the_ping_sweep_forgets_idle_sessions_and_keeps_open_streams() -> None:
    """
    A legacy session without a stream lives through sweeps until it was
    idle for its timeout; a listen stream is kept alive by a comment at
    each sweep; both count as heard while so.
    """
    mcp, router, clock = clients()
    idle = mcp.start_session("2025-11-25")
    request = StreamRequest()
    mcp.listen(request, "l-1", [], [], b"")
    sweeper = PingSweeper(router, interval=30, clock=clock)

    def sweep() -> None:
        done: list[object] = []
        sweeper.sweep().addCallback(done.append)
        while not done:
            clock.advance(sweeper.slice_gap)

    for _ in range(3):
        sweep()
        clock.advance(30)
    assert mcp.session(idle.id) is idle
    assert b": keep-alive\n\n" in request.written
    clock.advance(100)
    sweep()
    sweep()
    assert mcp.session(idle.id) is None
    assert router.connection_count == 1
    request.lose()
    assert router.connection_count == 0


def test_listeners_get_their_acknowledgment_first_and_only_what_they_asked() -> None:
    """
    A listen stream starts with its acknowledgment, carries its
    subscription id in every notification, hears of the list changes it
    asked for only, and leaves the router when its client closes it.
    """
    mcp, router, _ = clients()
    request = StreamRequest()
    mcp.listen(
        request, "listen-1", ["files"], ["toolsListChanged"], b"event: message\ndata: {}\n\n"
    )
    legacy = mcp.start_session("2025-11-25")
    stream = StreamRequest()
    legacy.stream.open(stream)
    router.publish("files", {})
    mcp.announce("notifications/tools/list_changed", "toolsListChanged")
    mcp.announce("notifications/resources/list_changed", "resourcesListChanged")
    meta = {"io.modelcontextprotocol/subscriptionId": "listen-1"}
    assert request.messages() == [
        {},
        {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"_meta": meta, "uri": "cluso://channels/files"},
        },
        {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"_meta": meta}},
    ]
    assert [m["method"] for m in stream.messages()] == [
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
    ]
    assert router.dialects == {"mcp": 2}
    request.lose()
    assert router.dialects == {"mcp": 1}


def test_sessions_and_subscriptions_are_limited_like_connections() -> None:
    """
    MCP clients count against max-connections (503, counted as a capacity
    refusal) and each holds at most max-subscriptions; only channels can
    be subscribed.
    """
    mcp, router, _ = clients(max_connections=1, max_subscriptions=1)
    legacy = mcp.start_session("2025-11-25")
    with pytest.raises(RpcError) as raised:
        mcp.start_session("2025-11-25")
    assert raised.value.status == 503
    with pytest.raises(RpcError):
        mcp.listen(StreamRequest(), 1, [], [], b"")
    assert router.refusals["capacity"] == 2
    mcp.subscribe(legacy, channel_uri("a"))
    mcp.subscribe(legacy, channel_uri("a"))
    with pytest.raises(RpcError, match="at most 1 subscriptions"):
        mcp.subscribe(legacy, channel_uri("b"))
    with pytest.raises(RpcError, match="Only channels"):
        mcp.subscribe(legacy, "cluso://files/a.txt")
    assert legacy.session.channels == ("a",)
    assert mcp.subscribable(["cluso://channels/x", "nope", 3, "cluso://channels/y"]) == [
        "cluso://channels/x"
    ]
