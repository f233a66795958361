"""
Real git repositories for tests: git run with the environment the server
gives its own git children, a committed repository to start from, and a
bare remote it is pushed to.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from cluso_router.workspace.git import git_environment


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """
    The output of git with C{args} in C{cwd}, with the server's git
    environment plus C{env}; fails (never skips) when git is missing.
    """
    if shutil.which("git") is None:
        pytest.fail("git is not installed; run the README's test command")
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**git_environment(), **(env or {})},
    ).stdout


def make_repo(
    path: Path,
    files: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """
    A repository at C{path} on branch C{main}, with C{files} (relative path
    to text; C{a.txt} by default) in one commit named C{initial}.
    """
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main", env=env)
    git(path, "config", "user.name", "Test", env=env)
    git(path, "config", "user.email", "test@example.com", env=env)
    git(path, "config", "commit.gpgsign", "false", env=env)
    for name, text in (files if files is not None else {"a.txt": "a\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A", env=env)
    git(path, "commit", "-q", "-m", "initial", env=env)
    return path


def push_to_bare_remote(root: Path, remote: Path, env: Mapping[str, str] | None = None) -> None:
    """
    Make C{remote} a bare repository, add it as C{origin} of C{root} and
    push C{main} there, tracking it.
    """
    git(root, "init", "-q", "--bare", "-b", "main", str(remote), env=env)
    git(root, "remote", "add", "origin", str(remote), env=env)
    git(root, "push", "-q", "-u", "origin", "main", env=env)
