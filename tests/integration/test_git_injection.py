"""
Git argument injection: values that would be git options if they reached
the command line as such are refused or passed where git cannot read them
as options, over the operations layer and over HTTP; the files they would
create never appear.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from support.gitrepo import git, make_repo
from support.servers import start_service

from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.git import GitOperations, GitRunner
from cluso_router.workspace.paths import Workspace

MARKERS = ("/tmp/pwn", "/tmp/x")
VALUES = ("--upload-pack=touch /tmp/pwn", "-u/tmp/x", "--output=/tmp/x")
#: What each test repository holds: a file named like an option too.
FILES = {"a.txt": "a\n", "-rf": "keep\n"}


@pytest.fixture
def markers_absent() -> Iterator[None]:
    """
    The marker files must not exist before (a leftover means an earlier
    injection succeeded) and must not appear during the test.
    """
    for marker in MARKERS:
        if os.path.lexists(marker):
            pytest.fail(f"{marker} exists before the test; remove it and find who made it")
    yield
    for marker in MARKERS:
        assert not os.path.lexists(marker), f"{marker} was created"


def ops_for(root: Path) -> GitOperations:
    from twisted.internet import reactor

    return GitOperations(GitRunner(str(root), reactor=reactor), Workspace(str(root)))


async def refusal(d: Any) -> str:
    with pytest.raises(ProcedureError) as info:
        await d
    return info.value.message


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("markers_absent")
async def test_option_like_refs_and_paths_are_refused(tmp_path: Path) -> None:
    """
    Branch names, new branch names and file paths starting with '-' are
    refused before git runs; the repository is unchanged.
    """
    repo = make_repo(tmp_path / "repo", FILES)
    ops = ops_for(repo)
    for value in (*VALUES, "-rf"):
        assert await refusal(ops.checkout(value)) == "Ref name cannot start with dash"
        assert await refusal(ops.create_branch(value)) == "Ref name cannot start with dash"
        assert await refusal(ops.checkout_file(value)) == "File path cannot start with dash"
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]
    assert git(repo, "status", "--porcelain") == ""


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("markers_absent")
async def test_a_file_named_like_an_option_is_only_ever_a_path(tmp_path: Path) -> None:
    """
    A file named '-rf' is restored when named './-rf' (it reaches git as a
    literal absolute pathspec after '--'), and 'add -A' commits such names
    as files.
    """
    repo = make_repo(tmp_path / "repo", FILES)
    ops = ops_for(repo)
    (repo / "-rf").write_text("changed\n")
    assert await ops.checkout_file("./-rf") == {"message": "Restored file: ./-rf"}
    assert (repo / "-rf").read_text() == "keep\n"
    (repo / "--output=x").write_text("o")
    await ops.commit("add an odd name")
    assert "--output=x" in git(repo, "ls-files").split("\n")


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("markers_absent")
async def test_messages_that_look_like_options_are_just_messages(tmp_path: Path) -> None:
    """
    Commit and stash messages are attached to --message=, so option-like
    text becomes the message itself.
    """
    repo = make_repo(tmp_path / "repo", FILES)
    ops = ops_for(repo)
    for value in VALUES:
        (repo / "a.txt").write_text(value)
        await ops.commit(value)
        assert git(repo, "log", "-1", "--format=%s").strip() == value
    (repo / "a.txt").write_text("stash me")
    await ops.stash(VALUES[0])
    assert VALUES[0] in git(repo, "stash", "list")


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("markers_absent")
async def test_injection_over_http(tmp_path: Path) -> None:
    """
    The same values over the HTTP API: 400 with the refusal for refs and
    paths, and push/pull ignore any body (they take no arguments).
    """
    repo = make_repo(tmp_path / "repo", FILES)
    running = start_service(repo, sources=(), auth="none")
    try:
        base = running.url + "api/git/"

        async def post(route: str, body: dict[str, Any]) -> tuple[int, Any]:
            response = await treq.post(base + route, data=json.dumps(body).encode())
            return response.code, json.loads(await response.content())

        for value in VALUES:
            for route, field in (("checkout", "branch"), ("create-branch", "name")):
                code, body = await post(route, {field: value})
                assert (code, body["error"]) == (400, "Ref name cannot start with dash")
            code, body = await post("checkout-file", {"file": value})
            assert (code, body["error"]) == (400, "File path cannot start with dash")
            code, body = await post("push", {"remote": value, "args": [value]})
            assert code == 400
            assert "No configured push destination" in body["error"]
    finally:
        await running.service.stopService()
