"""
Backups on a running server: the original's routes (cleanup reachable),
the same answers over HTTP and invoke, the OAuth routes' 501, and the
events a WebSocket client sees, with the file watcher running, once each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from support.servers import start_service

from cluso_router.service import ClusoService
from cluso_router.sources.files import FileWatcher
from cluso_router.testing import RunningServer, WebSocketTestClient, connect_client
from cluso_router.web.routes import openapi_document
from cluso_router.workspace.backups import BackupSettings

ID = re.compile(r"\d{14}-[a-z0-9]{6}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PROJECT = {"src/a.txt": "alpha\n", "src/b.md": "# b\n", "docs/c.txt": "c\n", ".env": "KEY=1\n"}


def populate(root: Path) -> Path:
    for name, content in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def serve(tmp_path: Path, name: str, **config: Any) -> RunningServer:
    root = populate(tmp_path / name / "root")
    store = BackupSettings(str(tmp_path / name / "backups"))
    return start_service(root, auth="none", backups=store, **config)


@dataclass
class Side:
    service: ClusoService
    root: Path
    url: str
    ids: list[str] = field(default_factory=list)

    def normalised(self, value: Any) -> Any:
        """
        C{value} with this side's backup ids numbered in order of first
        appearance, times and the root replaced.
        """
        text = json.dumps(value)
        for backup_id in ID.findall(text):
            if backup_id not in self.ids:
                self.ids.append(backup_id)
        text = ID.sub(lambda m: f"<id{self.ids.index(m.group())}>", text)
        return json.loads(TIME.sub("<time>", text.replace(str(self.root), "<root>")))

    def fill(self, template: Any) -> Any:
        """
        C{template} with C{{n}} replaced by this side's n-th backup id.
        """
        return json.loads(re.sub(r"\{(\d+)\}", lambda m: self.ids[int(m[1])], json.dumps(template)))


@pytest_twisted.async_yield_fixture
async def twins(tmp_path: Path) -> Any:
    sides = []
    for name in ("a", "b"):
        running = serve(tmp_path, name, sources=())
        sides.append(Side(running.service, Path(running.service.config.root), running.url))
    yield sides
    for side in sides:
        await side.service.stopService()


NONE = object()


@dataclass
class Step:
    procedure: str
    method: str
    route: str
    body: Any
    invoke: Any
    prepare: Callable[[Path], None] | None = None
    fails: bool = False


def modify(path: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / path).write_text(text)


STEPS = [
    Step("backup.list", "GET", "backup/list", None, NONE),
    Step("backup.create", "POST", "backup/create", {"description": "first"}, "first"),
    Step("backup.create", "POST", "backup/create", {}, NONE, fails=True),
    Step("backup.create", "POST", "backup/create", {"description": 5}, [5], fails=True),
    Step("backup.list", "GET", "backup/list", None, NONE),
    Step(
        "backup.getContent", "GET", "backup/content/{0}?file=src/a.txt", None, ["{0}", "src/a.txt"]
    ),
    Step(
        "backup.getContent",
        "GET",
        "backup/content/{0}?file=..%2F..%2Fetc%2Fpasswd",
        None,
        {"backupId": "{0}", "file": "../../etc/passwd"},
        fails=True,
    ),
    Step(
        "backup.getContent",
        "GET",
        "backup/content/{0}?file=.env",
        None,
        {"id": "{0}", "file": ".env"},
        fails=True,
    ),
    Step(
        "backup.getContent",
        "GET",
        "backup/content/nope?file=a",
        None,
        ["nope", "a"],
        fails=True,
    ),
    Step("backup.getContent", "GET", "backup/content/{0}", None, "{0}", fails=True),
    Step(
        "backup.restore",
        "POST",
        "backup/restore/{0}",
        None,
        "{0}",
        prepare=modify("src/a.txt", "changed\n"),
    ),
    Step(
        "backup.restore",
        "POST",
        "backup/restore/{0}",
        {"prune": True},
        {"backupId": "{0}", "prune": True},
        prepare=modify("extra.txt", "extra\n"),
    ),
    Step(
        "backup.restore", "POST", "backup/restore/{0}", {"prune": "no"}, ["{0}", "no"], fails=True
    ),
    Step(
        "backup.restore",
        "POST",
        "backup/restore/20240101000000-aaaaaa",
        None,
        "20240101000000-aaaaaa",
        fails=True,
    ),
    Step("backup.restore", "POST", "backup/restore/..%2Fx", None, "../x", fails=True),
    Step("backup.delete", "DELETE", "backup/{1}", None, "{1}"),
    Step("backup.delete", "DELETE", "backup/{1}", None, "{1}", fails=True),
    Step("backup.delete", "DELETE", "backup/not-an-id", None, {"backupName": "x"}, fails=True),
    Step("backup.list", "GET", "backup/list", None, NONE),
    Step("backup.cleanup", "DELETE", "backup/cleanup", None, NONE),
    Step("backup.list", "GET", "backup/list", None, NONE),
]


async def over_http(side: Side, step: Step) -> tuple[bool, Any]:
    url = side.url + "api/" + side.fill(step.route)
    body = b"" if step.body is None else json.dumps(step.body).encode()
    response = await treq.request(step.method, url, data=body)
    envelope = json.loads(await response.content())
    assert response.code == (200 if envelope["success"] else 400), envelope
    return envelope["success"], envelope["data"] if envelope["success"] else envelope["error"]


async def over_invoke(
    client: WebSocketTestClient, side: Side, number: int, step: Step
) -> tuple[bool, Any]:
    message: dict[str, Any] = {"type": "invoke", "id": number, "channel": step.procedure}
    if step.invoke is not NONE:
        message["data"] = side.fill(step.invoke)
    reply = await client.request(message)
    if "error" in reply:
        return False, reply["error"]
    return True, reply["data"]


@pytest_twisted.ensureDeferred
async def test_http_and_invoke_answer_alike_for_every_operation(twins: list[Side]) -> None:
    """
    Each step runs over HTTP on one server and over invoke on the other;
    the answers (data or error text) are equal once ids and times are
    numbered, and the steps cover every backup procedure and route.
    """
    http_side, invoke_side = twins
    client = await connect_client(invoke_side.url.replace("http", "ws", 1) + "ws")
    await client.next_message()
    try:
        for number, step in enumerate(STEPS):
            if step.prepare is not None:
                step.prepare(http_side.root)
                step.prepare(invoke_side.root)
            http = http_side.normalised(await over_http(http_side, step))
            invoked = invoke_side.normalised(await over_invoke(client, invoke_side, number, step))
            assert http == invoked, step
            assert http[0] is not step.fails, (step, http)
    finally:
        await client.close()

    procedures = {p for p in invoke_side.service.router.procedures if p.startswith("backup.")}
    assert {s.procedure for s in STEPS} == procedures
    document = openapi_document(http_side.service.root_resource)
    routes = {path for path in document["paths"] if path.startswith("/api/backup/")}
    assert routes == {
        "/api/backup/create",
        "/api/backup/list",
        "/api/backup/restore/{backupId}",
        "/api/backup/content/{backupId}",
        "/api/backup/{backupId}",
        "/api/backup/cleanup",
    }
    content = document["paths"]["/api/backup/content/{backupId}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in content["parameters"]] == [
        ("backupId", "path", True),
        ("file", "query", True),
    ]
    restore = document["paths"]["/api/backup/restore/{backupId}"]["post"]
    assert list(restore["requestBody"]["content"]["application/json"]["schema"]["properties"]) == [
        "prune"
    ]


async def call(method: str, url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = b"" if body is None else json.dumps(body).encode()
    response = await treq.request(method, url, data=data)
    return response.code, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_the_routes_answer_as_the_original_and_cleanup_is_reachable(
    tmp_path: Path,
) -> None:
    """
    The original's shapes and statuses; DELETE /api/backup/cleanup deletes
    every backup (the original read "cleanup" as a malformed id); unknown
    paths below a backup are 404 and wrong methods 405, with the envelope.
    """
    running = serve(tmp_path, "one", sources=())
    api = running.url + "api/backup/"
    try:
        code, created = await call("POST", api + "create", {"description": "one"})
        assert code == 200
        assert set(created["data"]) == {
            "id",
            "description",
            "createdAt",
            "files",
            "totalBytes",
            "automatic",
        }
        assert created["data"]["files"] == ["docs/c.txt", "src/a.txt", "src/b.md"]
        await call("POST", api + "create", {"description": "two"})
        code, listed = await call("GET", api + "list")
        assert [b["description"] for b in listed["data"]["backups"]] == ["two", "one"]

        code, body = await call("POST", api + "create", None)
        assert (code, body["error"]) == (400, "Invalid request: body is empty; send a JSON value")
        code, body = await call("DELETE", api + "cleanups")
        assert (code, body["error"]) == (400, "Invalid backup ID format")
        code, body = await call("GET", api + "cleanup")
        assert (code, body["error"]) == (405, "Method not allowed; use DELETE")
        code, body = await call("DELETE", api + created["data"]["id"] + "/more")
        assert (code, body["success"]) == (404, False)

        code, body = await call("DELETE", api + "cleanup")
        assert (code, body["data"]) == (200, {"message": "Deleted 2 backups", "count": 2})
        code, listed = await call("GET", api + "list")
        assert listed["data"] == {"backups": []}
    finally:
        await running.service.stopService()


@pytest_twisted.ensureDeferred
async def test_oauth_routes_answer_501_naming_the_api_key_option(server: Any) -> None:
    """
    Every /api/oauth/* route of the original, with any method, answers 501
    with the envelope and a message naming --ai-anthropic-key.
    """
    for method, path in [
        ("POST", "start"),
        ("POST", "complete"),
        ("GET", "token"),
        ("GET", "status"),
        ("POST", "logout"),
        ("GET", "anything/else"),
    ]:
        code, body = await call(method, server.url + "api/oauth/" + path, {})
        assert code == 501, path
        assert body == {
            "success": False,
            "data": None,
            "error": "OAuth sign-in is not supported; configure an API key with --ai-anthropic-key",
            "timestamp": body["timestamp"],
        }


@pytest_twisted.ensureDeferred
async def test_a_restore_is_announced_once_per_file_with_the_watcher_running(
    tmp_path: Path,
) -> None:
    """
    With the file watcher running, a restore's changes reach a subscriber
    of files exactly once each (the ledger silences the watcher's copies),
    and backup events come in order: created for the undo snapshot, then
    restored naming the same changes.
    """
    running = serve(tmp_path, "watched", sources=("files",))
    service = running.service
    watcher = service.sources.started["files"].watcher
    assert isinstance(watcher, FileWatcher)
    await watcher.when_ready()
    client = await connect_client(running.ws_url)
    await client.next_message()
    root = Path(service.config.root)
    barriers = 0

    async def events_until(done: Callable[[list[tuple[str, Any]]], bool]) -> list[tuple[str, Any]]:
        received: list[tuple[str, Any]] = []
        while not done(received):
            message = await client.next_message(15)
            if message.get("type") == "event":
                data = message["data"]
                if message["channel"] == "files":
                    data = (data["file"], data["event"])
                received.append((message["channel"], data))
        return received

    async def events_until_barrier() -> list[tuple[str, Any]]:
        """
        Every event received before a barrier file's own add event.
        """
        nonlocal barriers
        barriers += 1
        barrier = ("files", (f"barrier-{barriers}", "add"))
        (root / barrier[1][0]).write_text("barrier")
        received = await events_until(lambda r: barrier in r)
        return received[: received.index(barrier)]

    try:
        for channel in ("files", "backup"):
            await client.request({"type": "subscribe", "channel": channel, "id": channel})
        backup = await client.request(
            {"type": "invoke", "id": 1, "channel": "backup.create", "data": "base"}
        )
        await events_until_barrier()
        (root / "src/a.txt").write_text("changed\n")
        (root / "docs/c.txt").unlink()
        (root / "docs").rmdir()
        seen = {("src/a.txt", "change"), ("docs/c.txt", "unlink"), ("docs", "unlinkDir")}
        await events_until(lambda r: seen <= {value for _, value in r})

        reply = await client.request(
            {"type": "invoke", "id": 2, "channel": "backup.restore", "data": backup["data"]["id"]},
            timeout=15,
        )
        received = await events_until_barrier()
    finally:
        await client.close()
        await service.stopService()

    changes = [(c["file"], c["event"]) for c in reply["data"]["changed"]]
    assert sorted(changes) == [
        ("docs", "addDir"),
        ("docs/c.txt", "add"),
        ("src/a.txt", "change"),
    ]
    files = [value for channel, value in received if channel == "files"]
    assert sorted(files) == sorted(changes)
    backup_events = [value for channel, value in received if channel == "backup"]
    assert [(e["type"], e["id"]) for e in backup_events] == [
        ("created", reply["data"]["undoId"]),
        ("restored", backup["data"]["id"]),
    ]
    assert backup_events[1]["changed"] == reply["data"]["changed"]
