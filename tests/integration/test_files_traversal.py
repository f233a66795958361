"""
The traversal suite over the HTTP API: every route taking a path refuses
escapes (encoded, backslashed, absolute, NUL, symlinked to '/' directly or
through a symlinked directory), blocked names in any case, and removing
the root, with nothing read, written or deleted anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from support.servers import start_service

SECRET = "TOP-SECRET-outside"


@pytest_twisted.async_yield_fixture
async def site(tmp_path: Path) -> Any:
    """
    A server whose root holds a kept file, a symlink to '/', a symlinked
    directory leading to another link to '/', a link to a directory outside,
    and blocked names; beside the root a directory with a secret.
    """

    root = tmp_path / "root"
    (root / "deep").mkdir(parents=True)
    (root / "keep.txt").write_text("kept")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / ".env").write_text("TOKEN=1")
    os.symlink("/", root / "sys")
    os.symlink("/", root / "deep" / "sys")
    os.symlink("deep", root / "via")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    os.symlink(outside, root / "out")
    running = start_service(root, sources=(), auth="none")
    yield running.url + "api/", tmp_path
    await running.service.stopService()


def snapshot(top: Path) -> dict[str, tuple[Any, ...]]:
    """
    Every entry under C{top} (links not followed) with its type, size,
    modification time and content digest.
    """
    state: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            digest = ""
            if os.path.isfile(path) and not os.path.islink(path):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            state[os.path.relpath(path, top)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
        state[os.path.relpath(directory, top)] = (os.lstat(directory).st_mtime_ns,)
    return state


ESCAPES = [
    "../../etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%5c..%5cetc%5cpasswd",
    "{outside}/secret.txt",
    "{outside}",
    "/etc/passwd",
    "a/%00.txt",
    "a/\x00.txt",
    "sys/etc/passwd",
    "sys",
    "via/sys/etc/passwd",
    "out/secret.txt",
    ".GIT/config",
    ".git/config",
    ".Env",
    "node_modules/x",
]

Body = Callable[[str], dict[str, Any]]
ROUTES: list[tuple[str, Body]] = [
    ("files/read", lambda p: {"path": p}),
    ("files/write", lambda p: {"path": p, "content": "PWNED"}),
    ("files/create", lambda p: {"path": p, "content": "PWNED"}),
    ("files/delete", lambda p: {"path": p}),
    ("files/rename", lambda p: {"oldPath": "keep.txt", "newPath": p}),
    ("files/rename", lambda p: {"oldPath": p, "newPath": "moved"}),
    ("files/copy", lambda p: {"srcPath": p, "destPath": "copied"}),
    ("files/copy", lambda p: {"srcPath": "keep.txt", "destPath": p}),
    ("files/list", lambda p: {"path": p}),
    ("files/mkdir", lambda p: {"path": p}),
    ("files/rmdir", lambda p: {"path": p}),
    ("files/stat", lambda p: {"path": p}),
    ("files/tree", lambda p: {"path": p}),
    ("files/glob", lambda p: {"pattern": "**", "dirPath": p}),
    ("git/checkout-file", lambda p: {"file": p}),
]


async def post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    response = await treq.post(url, data=json.dumps(body).encode())
    return response.code, (await response.content()).decode("utf-8")


@pytest.mark.parametrize("escape", ESCAPES)
@pytest_twisted.ensureDeferred
async def test_every_route_refuses(site: tuple[str, Path], escape: str) -> None:
    """
    Each route answers 400 (exists: false) for the path, shows nothing of
    what lies outside, and changes nothing anywhere.
    """
    api, top = site
    path = escape.replace("{outside}", str(top / "outside"))
    before = snapshot(top)
    for route, body in ROUTES:
        code, text = await post(api + route, body(path))
        assert code == 400, (route, text)
        assert SECRET not in text
        assert "root:x:0" not in text
        assert json.loads(text)["success"] is False
    code, text = await post(api + "files/exists", {"path": path})
    assert (code, json.loads(text)["data"]) == (200, False)
    assert snapshot(top) == before


@pytest_twisted.ensureDeferred
async def test_the_root_is_never_removed(site: tuple[str, Path]) -> None:
    """
    Deleting or renaming '.', the absolute root, or a path normalising to
    it is refused and the root keeps every entry.
    """
    api, top = site
    root = str(top / "root")
    before = snapshot(top)
    for path in (".", root, root + "/", "deep/..", "./"):
        for route, body in (
            ("files/rmdir", {"path": path}),
            ("files/delete-directory", {"path": path}),
            ("files/delete", {"path": path}),
            ("files/rename", {"oldPath": path, "newPath": "elsewhere"}),
        ):
            code, text = await post(api + route, body)
            assert code == 400, (route, path, text)
    assert snapshot(top) == before


@pytest_twisted.ensureDeferred
async def test_error_texts_match_the_original(site: tuple[str, Path]) -> None:
    """
    The refusal texts carry the original's prefixes and wording.
    """
    api, _ = site
    cases = {
        ("files/read", "../x"): "Failed to read file: Path traversal detected: ../x",
        ("files/write", ".git/config"): (
            "Failed to write file: Access to sensitive directory blocked: .git"
        ),
        ("files/list", "out"): (
            "Failed to list directory: Path leaves the workspace through a symlink: out"
        ),
        ("files/rmdir", "."): "Failed to delete directory: Cannot delete the workspace root: .",
    }
    for (route, path), message in cases.items():
        code, text = await post(api + route, {"path": path, "content": ""})
        assert (code, json.loads(text)["error"]) == (400, message)
