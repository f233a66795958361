"""
Every mutation of the files and git API is announced to WebSocket
subscribers: file events (chokidar names, root-relative paths) on C{files},
git events (original types, messages naming the branch or short commit
id) on C{git}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from support.gitrepo import git, make_repo, push_to_bare_remote
from support.servers import start_service

from cluso_router.testing import WebSocketTestClient, connect_client


@pytest_twisted.async_yield_fixture
async def served(tmp_path: Path) -> Any:
    """
    A server on a repository pushed to a bare remote, with no event sources
    (so every event seen comes from the API), and a client subscribed to
    files and git.
    """
    root = make_repo(tmp_path / "root", {"src/a.txt": "a\n"})
    push_to_bare_remote(root, tmp_path / "remote.git")
    running = start_service(root, sources=(), auth="none")
    client = await connect_client(running.ws_url)
    await client.next_message()
    for channel in ("files", "git"):
        await client.request({"type": "subscribe", "channel": channel, "id": channel})
    yield running.url + "api/", client, root
    await client.close()
    await running.service.stopService()


async def events(client: WebSocketTestClient, count: int) -> list[tuple[str, ...]]:
    received = []
    for _ in range(count):
        message = await client.next_message()
        assert message["type"] == "event"
        data = message["data"]
        assert data["timestamp"].endswith("Z")
        if message["channel"] == "files":
            received.append(("files", data["file"], data["event"]))
        else:
            received.append((message["channel"], data["type"], data["message"]))
    return received


@pytest_twisted.ensureDeferred
async def test_every_mutation_is_announced(served: tuple[str, WebSocketTestClient, Path]) -> None:
    """
    Each files and git mutation, over HTTP or invoke, is followed by its
    events on the WebSocket, in order, and by nothing else.
    """
    api, client, root = served

    async def post(route: str, body: dict[str, Any] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        response = await treq.post(api + route, data=data)
        envelope = json.loads(await response.content())
        assert envelope["success"], (route, envelope)

    def short() -> str:
        return git(root, "rev-parse", "--short", "HEAD").strip()

    files_steps: list[tuple[str, dict[str, Any], list[tuple[str, ...]]]] = [
        (
            "files/write",
            {"path": "n/x.txt", "content": "x"},
            [("files", "n", "addDir"), ("files", "n/x.txt", "add")],
        ),
        ("files/write", {"path": "n/x.txt", "content": "y"}, [("files", "n/x.txt", "change")]),
        ("files/create", {"path": "c.txt"}, [("files", "c.txt", "add")]),
        ("files/copy", {"srcPath": "c.txt", "destPath": "d.txt"}, [("files", "d.txt", "add")]),
        (
            "files/rename",
            {"oldPath": "d.txt", "newPath": "e.txt"},
            [("files", "d.txt", "unlink"), ("files", "e.txt", "add")],
        ),
        ("files/delete", {"path": "e.txt"}, [("files", "e.txt", "unlink")]),
        (
            "files/mkdir",
            {"path": "m/q"},
            [("files", "m", "addDir"), ("files", "m/q", "addDir")],
        ),
        ("files/rmdir", {"path": "m"}, [("files", "m", "unlinkDir")]),
        ("files/delete-directory", {"path": "n/x.txt"}, [("files", "n/x.txt", "unlink")]),
    ]
    for route, body, expected in files_steps:
        await post(route, body)
        assert await events(client, len(expected)) == expected, route

    await post("git/commit", {"message": "work"})
    assert await events(client, 1) == [("git", "commit", f"Committed {short()} on main: work")]
    await post("git/push")
    assert await events(client, 1) == [("git", "push", "Pushed main")]
    await post("git/create-branch", {"name": "topic"})
    assert await events(client, 1) == [("git", "branch", "Created and switched to branch topic")]
    await post("git/checkout", {"branch": "main"})
    assert await events(client, 1) == [("git", "branch", "Switched to branch main")]
    (root / "src" / "a.txt").write_text("changed")
    await post("git/checkout-file", {"file": "src/a.txt"})
    assert await events(client, 2) == [
        ("files", "src/a.txt", "change"),
        ("git", "status", "Restored src/a.txt from HEAD"),
    ]
    (root / "src" / "a.txt").write_text("changed")
    await post("git/stash", {"message": "wip"})
    assert await events(client, 1) == [("git", "status", "Stashed changes on main")]
    await post("git/stash-pop")
    assert await events(client, 1) == [("git", "status", "Restored stashed changes on main")]
    await post("git/pull")
    assert await events(client, 1) == [("git", "pull", f"Pulled into main, now at {short()}")]

    reply = await client.request(
        {"type": "invoke", "id": 1, "channel": "files.writeFile", "data": ["i.txt", "i"]}
    )
    assert reply["data"] == {"path": "i.txt", "bytesWritten": 1}
    assert await events(client, 1) == [("files", "i.txt", "add")]
    with pytest.raises(TimeoutError):
        await client.next_message(timeout=0.3)


@pytest_twisted.ensureDeferred
async def test_failed_mutations_announce_nothing(
    served: tuple[str, WebSocketTestClient, Path],
) -> None:
    """
    A refused or failed mutation publishes no event.
    """
    api, client, _ = served
    for route, body in (
        ("files/write", {"path": "../x", "content": "x"}),
        ("files/delete", {"path": "missing"}),
        ("git/checkout", {"branch": "nope"}),
        ("git/commit", {"message": "nothing staged"}),
    ):
        response = await treq.post(api + route, data=json.dumps(body).encode())
        assert response.code == 400
        await response.content()
    with pytest.raises(TimeoutError):
        await client.next_message(timeout=0.3)


@pytest_twisted.ensureDeferred
async def test_with_the_file_watcher_each_change_is_announced_once(tmp_path: Path) -> None:
    """
    With the file watcher running too, a change made through the API is
    announced once (the watcher stays silent about it), and the temporary
    file behind an atomic write is never announced.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    root = tmp_path / "root"
    root.mkdir()
    running = start_service(root, sources=("files",), auth="none")
    url = running.url
    client = None
    try:
        client = await connect_client(running.ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "files", "id": 1})
        await deferLater(reactor, 0.5, lambda: None)
        for body in ({"path": "w.txt", "content": "1"}, {"path": "w.txt", "content": "2"}):
            response = await treq.post(url + "api/files/write", data=json.dumps(body).encode())
            assert response.code == 200
            await response.content()
        await deferLater(reactor, 1.0, lambda: None)
        seen = []
        while True:
            try:
                message = await client.next_message(timeout=0.2)
            except TimeoutError:
                break
            seen.append((message["data"]["file"], message["data"]["event"]))
        assert seen == [("w.txt", "add"), ("w.txt", "change")]
    finally:
        if client is not None:
            await client.close()
        await running.service.stopService()
