"""
The MCP endpoint driven by the official MCP Python SDK's client (in a
thread of its own) on both revisions, 2025-11-25 sessions and 2026-07-28,
and by raw HTTP for the transport's refusals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
import pytest_twisted
import treq
from autobahn.twisted.wamp import ApplicationRunner, ApplicationSession
from mcp.shared.exceptions import MCPError
from support.mcpclient import LEGACY, MODERN, in_thread, mcp_client, reactor_call
from support.servers import TEST_TOKEN, start_service
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from cluso_router.mcp.schemas import input_schema, output_schema
from cluso_router.sources.search.tools import choose_tool
from cluso_router.testing import until
from cluso_router.web.routes import operation_table
from cluso_router.ws.limits import Limits

REVISIONS = (LEGACY, MODERN)


def mcp_url(server: Any) -> str:
    return server.url + "mcp"


def root_of(server: Any) -> Path:
    return Path(server.service.config.root)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def search_server(secured_server: Any) -> Any:
    sources = secured_server.service.sources
    assert "search" in sources.started, f"search source not started: {sources.failed}"
    return secured_server


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", REVISIONS)
async def test_both_revisions_list_the_operation_table_as_tools(
    secured_server: Any, mode: str
) -> None:
    """
    A client of either revision connects with the token and lists one tool
    per operation the server serves and per other procedure, named and
    described from the same declarations as the HTTP routes: input and
    output schemas, and read-only tools marked so.
    """

    async def scenario(url: str) -> Any:
        async with mcp_client(url, TEST_TOKEN, mode) as client:
            tools = (await client.list_tools()).tools
            return client.protocol_version, client.server_info.name, tools

    version, name, tools = await in_thread(scenario, mcp_url(secured_server))
    assert version == ("2025-11-25" if mode == LEGACY else "2026-07-28")
    assert name == "cluso-router"
    service = secured_server.service
    table = operation_table(service.root_resource)
    expected = {op.name for op in table} | set(service.router.procedures)
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == expected
    for operation in table:
        tool = by_name[operation.name]
        assert tool.input_schema == input_schema(operation), operation.name
        assert tool.output_schema == output_schema(operation), operation.name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (not operation.mutates), operation.name
    assert by_name["files.readFile"].annotations.read_only_hint is True
    assert by_name["files.writeFile"].annotations.destructive_hint is True
    assert by_name["git.getStatus"].annotations.read_only_hint is True
    assert by_name["files.readFile"].input_schema["required"] == ["path"]
    assert by_name["server.info"].input_schema["properties"].keys() == {"data"}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", REVISIONS)
async def test_write_and_read_tools_answer_like_the_http_api(
    secured_server: Any, mode: str
) -> None:
    """
    files.writeFile writes a file, files.readFile reads it back as
    structured content (and text), and a path outside the root is a tool
    error with the very message the HTTP route answers with.
    """

    async def scenario(url: str) -> Any:
        async with mcp_client(url, TEST_TOKEN, mode) as client:
            written = await client.call_tool(
                "files.writeFile", {"path": "notes/a.md", "content": "# hello\n"}
            )
            read = await client.call_tool("files.readFile", {"path": "notes/a.md"})
            refused = await client.call_tool("files.readFile", {"path": "../../etc/passwd"})
            missing = await client.call_tool("files.readFile", {})
            return written, read, refused, missing

    written, read, refused, missing = await in_thread(scenario, mcp_url(secured_server))
    assert written.is_error is False
    assert written.structured_content == {"path": "notes/a.md", "bytesWritten": 8}
    assert (root_of(secured_server) / "notes/a.md").read_text() == "# hello\n"
    assert read.structured_content == {
        "path": "notes/a.md",
        "content": "# hello\n",
        "encoding": "utf-8",
    }
    assert json.loads(read.content[0].text) == read.structured_content
    for result, body in ((refused, {"path": "../../etc/passwd"}), (missing, {})):
        response = await treq.post(
            secured_server.url + "api/files/read",
            json=body,
            headers=secured_server.headers,
        )
        http_error = json.loads(await response.content())["error"]
        assert result.is_error is True
        assert result.content[0].text == http_error


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", REVISIONS)
async def test_files_search_reports_progress_from_its_steps(search_server: Any, mode: str) -> None:
    """
    files.searchInFiles sends a progress notification per searched chunk
    (files searched of the files listed, rising) before its result, which
    holds every match.
    """
    write(root_of(search_server), {f"src/f{i:03}.txt": f"needle {i}\n" for i in range(150)})

    async def scenario(url: str) -> Any:
        seen: list[tuple[float, float | None, str | None]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, total, message))

        async with mcp_client(url, TEST_TOKEN, mode) as client:
            result = await client.call_tool(
                "files.searchInFiles", {"pattern": "needle"}, progress_callback=progress
            )
            return result, seen

    result, seen = await in_thread(scenario, mcp_url(search_server))
    assert result.is_error is False
    assert len(result.structured_content["result"]) == 150
    assert len(seen) >= 2
    assert [done for done, _, _ in seen] == sorted({done for done, _, _ in seen})
    assert seen[-1][:2] == (150, 150)
    assert all(message and "files searched" in message for _, _, message in seen)


def hanging_rg(directory: Path) -> Path:
    """
    A stand-in C{rg} that lists one file and then never finishes searching.
    """
    directory.mkdir()
    script = directory / "rg"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do last=$a; [ "$a" = --files ] && printf "x.txt\\0" && exit 0; done\n'
        '[ "$last" = /dev/null ] && exit 1\n'
        "exec sleep 60\n"
    )
    script.chmod(0o755)
    return directory


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", REVISIONS)
async def test_cancelling_a_search_stops_it(
    search_server: Any, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A client that gives up on a search that would never end (with
    notifications/cancelled in 2025-11-25, by closing the stream in
    2026-07-28) stops it: the search is no longer running, and the
    session still answers.
    """
    write(root_of(search_server), {"x.txt": "x\n"})
    fake = hanging_rg(tmp_path / "fake-bin")
    search = search_server.service.sources.started["search"]
    monkeypatch.setattr(search, "_tool", choose_tool(str(fake / "rg")))

    async def scenario(url: str) -> Any:
        async with mcp_client(url, TEST_TOKEN, mode) as client:
            with anyio.move_on_after(1.0) as scope:
                await client.call_tool("files.searchInFiles", {"pattern": "x"})
            after = await client.call_tool("files.exists", {"path": "x.txt"})
            return scope.cancelled_caught, after.structured_content

    cancelled, after = await in_thread(scenario, mcp_url(search_server))
    assert cancelled is True
    assert after == {"result": True}
    await until(lambda: not search._running, timeout=5)


@pytest_twisted.ensureDeferred
async def test_validation_reports_each_validator_as_progress(tmp_path: Path) -> None:
    """
    validation.run reports each validator's result, as its validation
    event carries it, while the others still run.
    """
    passing = json.dumps([sys.executable, "-c", "print('[]')"])
    tools = tmp_path / "server-validation.toml"
    tools.write_text(
        "".join(
            f'[validation.tools.{name}]\ncommand = {passing}\ntype = "lint"\nparser = "ruff"\n'
            for name in ("first", "second")
        )
    )
    root = tmp_path / "root"
    write(root, {"cluso.toml": "[validation]\ndetect = false\n"})
    server = start_service(
        root,
        token=TEST_TOKEN,
        sources=("validation",),
        source_options={"validation": {"config": str(tools)}},
    )

    async def scenario(url: str) -> Any:
        seen: list[tuple[float, float | None, str | None]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, total, message))

        async with mcp_client(url, TEST_TOKEN) as client:
            result = await client.call_tool("validation.run", {}, progress_callback=progress)
            return result, seen

    try:
        result, seen = await in_thread(scenario, mcp_url(server))
    finally:
        await server.service.stopService()
    assert result.is_error is False
    assert {r["tool"] for r in result.structured_content["result"]} == {"first", "second"}
    assert [done for done, _, _ in seen] == [1, 2]
    assert {message for _, _, message in seen} == {"first passed", "second passed"}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", REVISIONS)
async def test_a_channel_resource_reads_its_recent_history(secured_server: Any, mode: str) -> None:
    """
    Each claimed channel is listed as a resource; reading one (claimed or
    not) gives its newest events in the JSON dialect's envelope, with the
    channel's position.
    """
    broadcaster = secured_server.service.broadcaster
    for name in ("a.txt", "b.txt"):
        broadcaster.file_changed(name, "add")

    async def scenario(url: str) -> Any:
        async with mcp_client(url, TEST_TOKEN, mode) as client:
            listed = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
            read = await client.read_resource("cluso://channels/files")
            return listed, templates, read

    listed, templates, read = await in_thread(scenario, mcp_url(secured_server))
    claimed = {spec.channel for spec in secured_server.service.router.claims.specs()}
    assert {str(r.uri) for r in listed} == {f"cluso://channels/{c}" for c in claimed}
    assert {t.uri_template for t in templates} == {
        "cluso://channels/{channel}",
        "cluso://files/{+path}",
    }
    body = json.loads(read.contents[0].text)
    assert body["channel"] == "files"
    assert body["seq"] == 2
    assert [e["data"]["file"] for e in body["events"]] == ["a.txt", "b.txt"]
    assert body["truncated"] is False


@pytest_twisted.ensureDeferred
async def test_a_file_resource_reads_through_the_files_operations(secured_server: Any) -> None:
    """
    cluso://files/<path> reads the file as text; a path outside the root is
    refused with the files API's message.
    """
    write(root_of(secured_server), {"docs/readme.md": "# docs\n"})

    async def scenario(url: str) -> Any:
        async with mcp_client(url, TEST_TOKEN) as client:
            read = await client.read_resource("cluso://files/docs/readme.md")
            try:
                await client.read_resource("cluso://files/..%2Fsecret")
            except MCPError as e:
                return read, e.error
            return read, None

    read, error = await in_thread(scenario, mcp_url(secured_server))
    assert read.contents[0].text == "# docs\n"
    assert read.contents[0].mime_type == "text/markdown"
    assert error is not None
    assert error.code == -32002
    assert "Path traversal detected" in error.message


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode", REVISIONS)
async def test_subscribers_hear_of_events_posted_over_http(secured_server: Any, mode: str) -> None:
    """
    A 2025-11-25 client that subscribed to a channel resource, and a
    2026-07-28 client listening to it, are told the resource was updated
    after C{POST /api/events/<channel>}.
    """
    events_url = secured_server.url + "api/events/builds"

    async def post() -> None:
        async with httpx2.AsyncClient(headers=secured_server.headers) as http:
            response = await http.post(events_url, json={"ok": True})
            assert response.status_code == 200

    async def legacy(url: str) -> list[str]:
        updates: list[str] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updates.append(str(message.params.uri))

        async with mcp_client(url, TEST_TOKEN, LEGACY, on_message) as client:
            await client.subscribe_resource("cluso://channels/builds")
            with anyio.fail_after(10):
                while not updates:
                    await post()
                    await anyio.sleep(0.2)
        return updates

    async def modern(url: str) -> list[str]:
        async with (
            mcp_client(url, TEST_TOKEN, MODERN) as client,
            client.listen(resource_subscriptions=["cluso://channels/builds"]) as heard,
        ):
            assert heard.honored.resource_subscriptions == ["cluso://channels/builds"]
            await post()
            with anyio.fail_after(10):
                async for event in heard:
                    return [str(event.uri)]
        return []

    updates = await in_thread(legacy if mode == LEGACY else modern, mcp_url(secured_server))
    assert set(updates) == {"cluso://channels/builds"}


class Callee(ApplicationSession):
    """
    A WAMP client that registers C{calc.double} and leaves when told.
    """

    joined: Deferred[Callee]

    async def onJoin(self, details: Any) -> None:
        await self.register(lambda x: x * 2, "calc.double")
        self.joined.callback(self)


@pytest_twisted.ensureDeferred
async def test_a_procedure_a_client_registered_is_a_tool_while_registered(
    secured_server: Any,
) -> None:
    """
    A procedure a WAMP client registered appears as a tool, answers through
    the callee, and goes when the client leaves; a connected MCP session is
    told each time the tool list changed.
    """
    joined: Deferred[Callee] = Deferred()
    Callee.joined = joined
    runner = ApplicationRunner(secured_server.ws_url, "cluso", headers=secured_server.headers)
    runner.run(Callee, start_reactor=False, auto_reconnect=False)
    callee = await joined.addTimeout(10, reactor)

    async def scenario(url: str) -> Any:
        changes: list[Any] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                changes.append(message)

        async with mcp_client(url, TEST_TOKEN, LEGACY, on_message) as client:
            before = {tool.name for tool in (await client.list_tools()).tools}
            doubled = await client.call_tool("calc.double", {"data": 21})
            await anyio.sleep(0.3)
            reactor_call(callee.leave)
            with anyio.fail_after(10):
                while not changes:
                    await anyio.sleep(0.05)
            after = {tool.name for tool in (await client.list_tools()).tools}
            return before, doubled, after

    before, doubled, after = await in_thread(scenario, mcp_url(secured_server))
    assert "calc.double" in before
    assert doubled.structured_content == {"result": 42}
    assert "calc.double" not in after


@pytest_twisted.ensureDeferred
async def test_mcp_sessions_are_counted_limited_and_visible(tmp_path: Path) -> None:
    """
    An MCP session is a session of the router: /api/health and /metrics
    count it under the mcp dialect, and with max-connections 1 a second
    session is refused with 503 while the first lasts, and taken once it
    ended.
    """
    root = tmp_path / "root"
    root.mkdir()
    server = start_service(root, token=TEST_TOKEN, limits=Limits(max_connections=1))
    url = server.url + "mcp"
    try:

        async def scenario() -> Any:
            async with mcp_client(url, TEST_TOKEN) as client:
                await client.list_tools()
                async with httpx2.AsyncClient(headers=server.headers) as http:
                    health = (await http.get(server.url + "api/health")).json()["data"]
                    metrics = (await http.get(server.url + "metrics")).text
                    second = await http.post(
                        url,
                        json=initialize_body(),
                        headers={"accept": "application/json, text/event-stream"},
                    )
            async with mcp_client(url, TEST_TOKEN) as again:
                await again.list_tools()
            return health, metrics, second.status_code

        health, metrics, refused = await in_thread(scenario)
        assert health["connections"] == 1
        assert health["sessions"] == {"mcp": 1}
        assert 'cluso_sessions{dialect="mcp"} 1.0' in metrics
        assert refused == 503
        assert server.service.router.refusals["capacity"] == 1
        await until(lambda: server.service.router.connection_count == 0)
    finally:
        await server.service.stopService()


def initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }


ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def raw(
    server: Any, method: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    """
    One request to /mcp with the token and C{headers}: the status, the
    JSON body (or C{None}) and the response headers.
    """
    sent = {**server.headers, **ACCEPT, **(headers or {})}
    data = json.dumps(body).encode() if body is not None else None
    response = await treq.request(method, server.url + "mcp", data=data, headers=sent)
    content = await response.content()
    return response.code, json.loads(content) if content else None, response.headers


@pytest_twisted.ensureDeferred
async def test_refused_without_the_token_and_from_a_foreign_origin(secured_server: Any) -> None:
    """
    Without the token every method is refused with 401 (the SDK client
    fails to connect); with it, a request from a foreign Origin is refused
    with 403, the GET stream too, while the server's own origin is served.
    """
    for method in ("POST", "GET", "DELETE"):
        response = await treq.request(
            method, secured_server.url + "mcp", data=json.dumps(initialize_body()).encode(),
            headers=ACCEPT,
        )  # fmt: skip
        assert response.code == 401, method
        assert response.headers.getRawHeaders("www-authenticate") == ['Bearer realm="cluso"']
    for method in ("POST", "GET"):
        status, _, _ = await raw(
            secured_server, method, initialize_body(), {"origin": "http://localhost.evil.example"}
        )
        assert status == 403, method
    own = f"http://127.0.0.1:{secured_server.port}"
    status, body, _ = await raw(secured_server, "POST", initialize_body(), {"origin": own})
    assert status == 200
    assert body["result"]["protocolVersion"] == "2025-11-25"

    async def without_token(url: str) -> bool:
        try:
            async with mcp_client(url, None) as client:
                await client.list_tools()
        except Exception:
            return False
        return True

    refused = secured_server.service.router.refusals["token"]
    assert await in_thread(without_token, mcp_url(secured_server)) is False
    assert secured_server.service.router.refusals["token"] > refused == 3
    assert secured_server.service.router.refusals["origin"] == 2


@pytest_twisted.ensureDeferred
async def test_transport_answers_each_mistake_with_its_status(secured_server: Any) -> None:
    """
    The Streamable HTTP rules: a session starts with initialize and is then
    named in every request (400 without, 404 for an unknown or ended one);
    notifications get 202; an unknown revision is 400 naming the supported
    ones; a 2026-07-28 request whose headers disagree with its body is 400,
    an unknown method 404; bad bodies, Accept and Content-Type are refused.
    """
    status, body, headers = await raw(secured_server, "POST", initialize_body())
    assert status == 200
    session = headers.getRawHeaders("mcp-session-id")[0]
    named = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert (await raw(secured_server, "POST", ping, named))[:2] == (
        200,
        {"jsonrpc": "2.0", "id": 2, "result": {}},
    )
    notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await raw(secured_server, "POST", notice, named))[:2] == (202, None)
    assert (await raw(secured_server, "POST", ping))[0] == 400
    assert (await raw(secured_server, "POST", ping, {"mcp-session-id": "nope"}))[0] == 404
    status, body, _ = await raw(
        secured_server, "POST", ping, {**named, "mcp-protocol-version": "2099-01-01"}
    )
    assert status == 400
    assert body["error"]["code"] == -32022
    assert "2026-07-28" in body["error"]["data"]["supported"]
    unknown = {"jsonrpc": "2.0", "id": 3, "method": "nope/nope"}
    status, body, _ = await raw(secured_server, "POST", unknown, named)
    assert (status, body["error"]["code"]) == (200, -32601)

    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    listing = {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": meta}}
    modern = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    status, body, _ = await raw(secured_server, "POST", listing, modern)
    assert status == 200
    assert body["result"]["resultType"] == "complete"
    assert (body["result"]["ttlMs"], body["result"]["cacheScope"]) == (0, "private")
    status, body, _ = await raw(
        secured_server, "POST", listing, {**modern, "mcp-method": "tools/call"}
    )
    assert (status, body["error"]["code"]) == (400, -32020)
    call = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {"_meta": meta, "name": "files.getCwd", "arguments": {}},
    }
    status, body, _ = await raw(
        secured_server, "POST", call, {**modern, "mcp-method": "tools/call", "mcp-name": "x"}
    )
    assert (status, body["error"]["code"]) == (400, -32020)
    wrong = {**listing, "method": "resources/subscribe"}
    status, body, _ = await raw(
        secured_server, "POST", wrong, {**modern, "mcp-method": "resources/subscribe"}
    )
    assert (status, body["error"]["code"]) == (404, -32601)
    assert (await raw(secured_server, "GET", None, modern))[0] == 405

    assert (await raw(secured_server, "POST", [ping, ping], named))[0] == 400
    assert (await raw(secured_server, "POST", ping, {**named, "accept": "application/json"}))[
        0
    ] == 406
    assert (await raw(secured_server, "POST", ping, {**named, "content-type": "text/plain"}))[
        0
    ] == 415
    assert (await raw(secured_server, "DELETE", None, named))[0] == 204
    assert (await raw(secured_server, "POST", ping, named))[0] == 404
