"""
No write can make git run a program: the repository is found once (never
an implicit bare one) and pinned, names that would make the root look like
a repository cannot be written, hooks in the workspace never run, and a
root without a repository answers "not a git repository" whatever it holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from support.gitrepo import git, make_repo
from support.servers import start_service

from cluso_router.workspace.git import NOT_A_REPOSITORY

CONFIG = '[core]\n\trepositoryformatversion = 0\n\tbare = true\n\tfsmonitor = "touch {marker}"\n'


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await treq.post(url, json.dumps(body).encode())
    return response.code, json.loads(await response.content())


def plant_bare_repository(root: Path, marker: Path) -> None:
    """
    Make C{root} look like a bare repository whose configuration runs a
    program on every git command (what the attack wrote through the API).
    """
    (root / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "objects").mkdir(exist_ok=True)
    (root / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    (root / "config").write_text(CONFIG.format(marker=marker))


@pytest_twisted.ensureDeferred
async def test_repository_shaped_names_cannot_be_written_at_a_root_without_git(
    tmp_path: Path,
) -> None:
    """
    At a root with no .git of its own, HEAD, config, objects and refs cannot
    be created through the files API (write, create, mkdir, rename, copy);
    the same names below the root are fine.
    """
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(root, auth="none", sources=())
    url = running.url + "api/files/"
    try:
        (root / "a.txt").write_text("a")
        for route, body in (
            ("write", {"path": "HEAD", "content": "ref: refs/heads/x\n"}),
            ("create", {"path": "config", "content": ""}),
            ("mkdir", {"path": "objects"}),
            ("write", {"path": "refs/heads/main", "content": "0" * 40}),
            ("rename", {"oldPath": "a.txt", "newPath": "config"}),
            ("copy", {"srcPath": "a.txt", "destPath": "HEAD"}),
        ):
            status, answer = await post(url + route, body)
            assert status == 400, (route, body)
            assert "could look like a git repository" in answer["error"]
        status, _ = await post(url + "write", {"path": "docs/config", "content": "x"})
        assert status == 200
        assert sorted(p.name for p in root.iterdir()) == ["a.txt", "docs"]
    finally:
        await running.service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_root_without_repository_stays_one_whatever_it_holds(tmp_path: Path) -> None:
    """
    Files that make the root look like a bare repository (put there by
    hand, not through the API) are never used: every git route answers
    git's "not a git repository", and the configured program never runs.
    """
    root = tmp_path / "root"
    root.mkdir()
    marker = tmp_path / "ran"
    plant_bare_repository(root, marker)
    running = start_service(root, auth="none", sources=())
    try:
        response = await treq.get(running.url + "api/git/status")
        answer = json.loads(await response.content())
        assert response.code == 400
        assert answer["error"] == NOT_A_REPOSITORY
        status, answer = await post(running.url + "api/git/commit", {"message": "x"})
        assert status == 400
        assert answer["error"] == NOT_A_REPOSITORY
        assert not marker.exists()
    finally:
        await running.service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_subfolder_root_keeps_its_repository_and_hooks_in_it_never_run(
    tmp_path: Path,
) -> None:
    """
    Served from a subfolder of a repository, the git routes keep using that
    repository after the subfolder is made to look like a bare one; and a
    core.hooksPath pointing into the workspace is not followed, so a hook
    written there does not run on commit.
    """
    repo = make_repo(tmp_path / "repo", {"sub/a.txt": "a\n"})
    git(repo, "config", "core.hooksPath", "sub/.hooks")
    root = repo / "sub"
    marker = tmp_path / "hook-ran"
    running = start_service(root, auth="none", sources=())
    try:
        response = await treq.get(running.url + "api/git/current-branch")
        assert json.loads(await response.content())["data"] == {"branch": "main"}
        hooks = root / ".hooks"
        hooks.mkdir()
        hook = hooks / "pre-commit"
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
        plant_bare_repository(root, tmp_path / "fsmonitor-ran")
        (repo / "sub" / "b.txt").write_text("b\n")
        response = await treq.get(running.url + "api/git/current-branch")
        assert json.loads(await response.content())["data"] == {"branch": "main"}
        status, answer = await post(running.url + "api/git/commit", {"message": "add b"})
        assert status == 200, answer
        assert not marker.exists()
        assert not (tmp_path / "fsmonitor-ran").exists()
        assert "add b" in git(repo, "log", "-1", "--format=%s")
    finally:
        await running.service.stopService()
    assert os.path.exists(repo / ".git")
