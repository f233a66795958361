"""
One operations layer, two transports: every files and git operation gives
the same C{data} (or the same error) over HTTP as over C{invoke}, on two
servers whose workspaces start identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from support.gitrepo import make_repo, push_to_bare_remote
from support.servers import start_service

from cluso_router.service import ClusoService
from cluso_router.testing import WebSocketTestClient, connect_client
from cluso_router.web.routes import openapi_document

FIXED = 1733758245.0
DATES = {"GIT_AUTHOR_DATE": "2024-12-09T15:30:45Z", "GIT_COMMITTER_DATE": "2024-12-09T15:30:45Z"}


def populate(base: Path) -> Path:
    """
    A repository with a few files and fixed times, pushed to a bare remote,
    so two calls of this make workspaces that answer alike.
    """
    contents = {"src/a.txt": "alpha\n", "src/b.md": "# b\n", "docs/c.txt": "c\n"}
    root = make_repo(base / "root", contents, env=DATES)
    push_to_bare_remote(root, base / "remote.git", env=DATES)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(directory, name), (FIXED, FIXED), follow_symlinks=False)
    os.utime(root, (FIXED, FIXED))
    return root


@dataclass
class Side:
    service: ClusoService
    root: Path
    url: str


@pytest_twisted.async_yield_fixture
async def twins(tmp_path: Path) -> Any:
    sides = []
    for name in ("a", "b"):
        root = populate(tmp_path / name)
        running = start_service(root, sources=(), auth="none")
        sides.append(Side(running.service, root, running.url))
    yield sides
    for side in sides:
        await side.service.stopService()


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


NONE = object()

STEPS = [
    Step("files.stat", "POST", "files/stat", {"path": "src/a.txt"}, "src/a.txt"),
    Step("files.listDirectory", "POST", "files/list", {"path": "src"}, "src"),
    Step("files.listDirectory", "POST", "files/list-directory", {}, NONE),
    Step("files.getTree", "POST", "files/tree", {"maxDepth": 1}, {"maxDepth": 1}),
    Step("files.getTree", "POST", "files/tree", {}, NONE),
    Step("files.glob", "POST", "files/glob", {"pattern": "**/*.{txt,md}"}, "**/*.{txt,md}"),
    Step(
        "files.glob", "POST", "files/glob", {"pattern": "*.txt", "dirPath": "src"}, ["*.txt", "src"]
    ),
    Step("files.exists", "POST", "files/exists", {"path": "src/a.txt"}, "src/a.txt"),
    Step("files.exists", "POST", "files/exists", {"path": "../x"}, "../x"),
    Step("files.getCwd", "GET", "files/cwd", None, NONE),
    Step("files.readFile", "POST", "files/read", {"path": "src/a.txt"}, "src/a.txt"),
    Step("files.readFile", "POST", "files/read", {"path": "nope"}, {"path": "nope"}, fails=True),
    Step("files.readFile", "POST", "files/read", {}, NONE, fails=True),
    Step(
        "files.writeFile",
        "POST",
        "files/write",
        {"path": "w/x.txt", "content": "x"},
        ["w/x.txt", "x"],
    ),
    Step("files.writeFile", "POST", "files/write", {"path": "w/x.txt"}, "w/x.txt", fails=True),
    Step("files.createFile", "POST", "files/create", {"path": "c.txt"}, "c.txt"),
    Step(
        "files.createFile",
        "POST",
        "files/create",
        {"path": "c.txt", "content": "y"},
        ["c.txt", "y"],
        fails=True,
    ),
    Step(
        "files.copyFile",
        "POST",
        "files/copy",
        {"srcPath": "c.txt", "destPath": "d.txt"},
        {"srcPath": "c.txt", "destPath": "d.txt"},
    ),
    Step(
        "files.renameFile",
        "POST",
        "files/rename",
        {"oldPath": "d.txt", "newPath": "e/f.txt"},
        ["d.txt", "e/f.txt"],
    ),
    Step(
        "files.renameFile",
        "POST",
        "files/rename",
        {"oldPath": "missing", "newPath": "z"},
        ["missing", "z"],
        fails=True,
    ),
    Step("files.createDirectory", "POST", "files/mkdir", {"path": "m/n"}, "m/n"),
    Step(
        "files.createDirectory", "POST", "files/create-directory", {"path": "m/o"}, {"path": "m/o"}
    ),
    Step("files.deleteFile", "POST", "files/delete", {"path": "e/f.txt"}, "e/f.txt"),
    Step("files.deleteFile", "POST", "files/delete", {"path": "m"}, "m", fails=True),
    Step("files.deleteDirectory", "POST", "files/rmdir", {"path": "m/n"}, "m/n"),
    Step("files.deleteDirectory", "POST", "files/delete-directory", {"path": "m"}, "m"),
    Step("files.deleteDirectory", "POST", "files/rmdir", {"path": "."}, ".", fails=True),
    Step("git.getCurrentBranch", "GET", "git/current-branch", None, NONE),
    Step("git.getBranches", "GET", "git/branches", None, NONE),
    Step("git.getStatus", "GET", "git/status", None, NONE),
    Step("git.commit", "POST", "git/commit", {"message": "work"}, "work"),
    Step("git.commit", "POST", "git/commit", {"message": ""}, "", fails=True),
    Step("git.createBranch", "POST", "git/create-branch", {"name": "feature"}, "feature"),
    Step(
        "git.createBranch", "POST", "git/create-branch", {"name": "-x"}, {"name": "-x"}, fails=True
    ),
    Step("git.checkout", "POST", "git/checkout", {"branch": "main"}, "main"),
    Step("git.checkout", "POST", "git/checkout", {}, NONE, fails=True),
    Step(
        "git.checkoutFile",
        "POST",
        "git/checkout-file",
        {"filePath": "src/a.txt"},
        "src/a.txt",
        prepare=modify("src/a.txt", "changed"),
    ),
    Step(
        "git.checkoutFile",
        "POST",
        "git/checkout-file",
        {"file": ".git/config"},
        ".git/config",
        fails=True,
    ),
    Step(
        "git.stash", "POST", "git/stash", {"message": "s1"}, "s1", prepare=modify("src/a.txt", "1")
    ),
    Step("git.stash", "POST", "git/stash", {}, NONE),
    Step("git.stashPop", "POST", "git/stash-pop", None, NONE),
    Step(
        "git.stashWithMessage",
        "POST",
        "git/stash",
        {"message": "s2"},
        "s2",
        prepare=modify("src/a.txt", "2"),
    ),
    Step("git.stashPop", "POST", "git/stash-pop", None, NONE),
    Step("git.getStatus", "GET", "git/status", None, NONE),
    Step("git.push", "POST", "git/push", None, NONE),
    Step("git.pull", "POST", "git/pull", None, NONE),
]


async def over_http(side: Side, step: Step) -> tuple[bool, Any]:
    url = side.url + "api/" + step.route
    if step.method == "GET":
        response = await treq.get(url)
    else:
        body = b"" if step.body is None else json.dumps(step.body).encode()
        response = await treq.post(url, data=body)
    envelope = json.loads(await response.content())
    assert response.code == (200 if envelope["success"] else 400), envelope
    return envelope["success"], envelope["data"] if envelope["success"] else envelope["error"]


async def over_invoke(client: WebSocketTestClient, number: int, step: Step) -> tuple[bool, Any]:
    message: dict[str, Any] = {"type": "invoke", "id": number, "channel": step.procedure}
    if step.invoke is not NONE:
        message["data"] = step.invoke
    reply = await client.request(message)
    if "error" in reply:
        return False, reply["error"]
    return True, reply["data"]


def normalised(value: Any, root: Path) -> Any:
    return json.loads(json.dumps(value).replace(str(root), "<root>"))


@pytest_twisted.ensureDeferred
async def test_http_and_invoke_answer_alike_for_every_operation(twins: list[Side]) -> None:
    """
    Each step runs over HTTP on one server and over invoke on the other;
    the results (data, or error text) are equal, and the steps cover every
    files and git procedure and every files and git route.
    """
    http_side, invoke_side = twins
    client = await connect_client(invoke_side.url.replace("http", "ws", 1) + "ws")
    await client.next_message()
    try:
        for number, step in enumerate(STEPS):
            if step.prepare is not None:
                step.prepare(http_side.root)
                step.prepare(invoke_side.root)
            http = normalised(await over_http(http_side, step), http_side.root)
            invoked = normalised(await over_invoke(client, number, step), invoke_side.root)
            assert http == invoked, step
            assert http[0] is not step.fails, (step, http)
    finally:
        await client.close()

    procedures = {
        p for p in invoke_side.service.router.procedures if p.split(".")[0] in ("files", "git")
    }
    assert {s.procedure for s in STEPS} == procedures
    routes = {
        path
        for path in openapi_document(http_side.service.root_resource)["paths"]
        if path.startswith(("/api/files/", "/api/git/")) and path != "/api/files/search"
    }
    assert {"/api/" + s.route for s in STEPS} == routes


@pytest_twisted.ensureDeferred
async def test_invoke_argument_forms(twins: list[Side]) -> None:
    """
    invoke data: a bare value is the first argument, an array the
    arguments in order (too many is an error), an object named arguments.
    """
    side = twins[0]
    client = await connect_client(side.url.replace("http", "ws", 1) + "ws")
    await client.next_message()
    try:
        forms = [
            "src/a.txt",
            ["src/a.txt"],
            {"path": "src/a.txt"},
        ]
        for number, data in enumerate(forms):
            reply = await client.request(
                {"type": "invoke", "id": number, "channel": "files.readFile", "data": data}
            )
            assert reply["data"]["content"] == "alpha\n"
        reply = await client.request(
            {"type": "invoke", "id": 9, "channel": "files.readFile", "data": ["a", "b"]}
        )
        assert reply["error"] == "files.readFile takes at most 1 argument(s)"
    finally:
        await client.close()
