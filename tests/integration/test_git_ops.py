"""
The git operations on real repositories in temporary directories: data
shapes and texts of the original, a bare repository as the remote for push
and pull, and the git events each mutation publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.gitrepo import git, make_repo, push_to_bare_remote

from cluso_router.router.procedures import ProcedureError
from cluso_router.service import EventBroadcaster
from cluso_router.testing import RecordingPublisher
from cluso_router.workspace.git import GitOperations, GitRunner
from cluso_router.workspace.paths import Workspace


@dataclass
class Repo:
    ops: GitOperations
    root: Path
    published: RecordingPublisher

    def events(self) -> list[tuple[str, str]]:
        return [(d["type"], d["message"]) for _, d in self.published.published]


def operations(root: Path) -> Repo:
    from twisted.internet import reactor

    published = RecordingPublisher()
    ops = GitOperations(
        GitRunner(str(root), reactor=reactor),
        Workspace(str(root)),
        EventBroadcaster(published),
    )
    return Repo(ops, root, published)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return operations(make_repo(tmp_path / "repo"))


async def failure(d: Any) -> str:
    with pytest.raises(ProcedureError) as info:
        await d
    return info.value.message


@pytest_twisted.ensureDeferred
async def test_current_branch_named_unborn_and_detached(repo: Repo, tmp_path: Path) -> None:
    """
    The branch name; also on a new repository without commits; HEAD when
    detached.
    """
    assert await repo.ops.get_current_branch() == {"branch": "main"}
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "trunk")
    assert await operations(empty).ops.get_current_branch() == {"branch": "trunk"}
    git(repo.root, "checkout", "-q", "--detach")
    assert await repo.ops.get_current_branch() == {"branch": "HEAD"}


@pytest_twisted.ensureDeferred
async def test_not_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    """
    Outside a repository every git operation fails with git's own
    'not a git repository' message.
    """
    plain = tmp_path / "plain"
    plain.mkdir()
    ops = operations(plain).ops
    for call in (ops.get_current_branch(), ops.get_branches(), ops.get_status(), ops.push()):
        assert "not a git repository" in await failure(call)


@pytest_twisted.ensureDeferred
async def test_branches_local_then_remote(repo: Repo, tmp_path: Path) -> None:
    """
    Local branches, then remote ones as remotes/<remote>/<name>; the
    symbolic origin/HEAD is left out.
    """
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo.root, "branch", "feature")
    git(repo.root, "remote", "add", "origin", str(remote))
    git(repo.root, "push", "-q", "origin", "main")
    git(repo.root, "fetch", "-q", "origin")
    git(repo.root, "remote", "set-head", "origin", "main")
    assert await repo.ops.get_branches() == {"branches": ["feature", "main", "remotes/origin/main"]}


@pytest_twisted.ensureDeferred
async def test_status_keeps_every_filename_whole(repo: Repo) -> None:
    """
    Status entries are {status, file}: the first entry of an unstaged
    change keeps its first character (the original dropped it), names with
    spaces and non-ASCII come unquoted, renames read 'old -> new'.
    """
    (repo.root / "a.txt").write_text("changed\n")
    (repo.root / "new file \u00e9.txt").write_text("n")
    (repo.root / "b.txt").write_text("b")
    git(repo.root, "add", "b.txt")
    git(repo.root, "commit", "-q", "-m", "b")
    git(repo.root, "mv", "b.txt", "c.txt")
    status = await repo.ops.get_status()
    assert status == {
        "files": [
            {"status": "M", "file": "a.txt"},
            {"status": "R", "file": "b.txt -> c.txt"},
            {"status": "??", "file": "new file \u00e9.txt"},
        ],
        "hasChanges": True,
    }
    git(repo.root, "stash", "-q", "-u")
    assert await repo.ops.get_status() == {"files": [], "hasChanges": False}


@pytest_twisted.ensureDeferred
async def test_checkout_and_create_branch(repo: Repo) -> None:
    """
    create-branch switches to a new branch, checkout switches back; both
    validate the name with the original's texts and git's own rules, and
    each publishes a branch event naming the branch.
    """
    assert await repo.ops.create_branch("feature/x") == {
        "message": "Created and switched to branch: feature/x"
    }
    assert git(repo.root, "symbolic-ref", "--short", "HEAD").strip() == "feature/x"
    assert await repo.ops.checkout("main") == {"message": "Switched to branch: main"}
    assert await failure(repo.ops.checkout()) == "Branch name is required"
    assert await failure(repo.ops.checkout(3)) == "Invalid ref name"
    assert await failure(repo.ops.checkout("a b")) == "Invalid characters in ref name"
    assert await failure(repo.ops.checkout("a..b")) == "Invalid characters in ref name"
    assert await failure(repo.ops.create_branch("-x")) == "Ref name cannot start with dash"
    assert "not a valid branch name" in await failure(repo.ops.create_branch("x.lock"))
    assert "invalid reference: nope" in await failure(repo.ops.checkout("nope"))
    assert repo.events() == [
        ("branch", "Created and switched to branch feature/x"),
        ("branch", "Switched to branch main"),
    ]


@pytest_twisted.ensureDeferred
async def test_commit_stages_everything(repo: Repo) -> None:
    """
    commit runs add -A then commits with the message; the event names the
    short commit id and the branch; with nothing to commit git's own text
    (printed on stdout) is the error.
    """
    (repo.root / "n.txt").write_text("n")
    (repo.root / "a.txt").write_text("changed")
    assert await repo.ops.commit("second\n\nbody") == {"message": "Commit created: second\n\nbody"}
    assert git(repo.root, "log", "-1", "--format=%B").strip() == "second\n\nbody"
    assert git(repo.root, "status", "--porcelain") == ""
    short = git(repo.root, "rev-parse", "--short", "HEAD").strip()
    assert repo.events() == [("commit", f"Committed {short} on main: second")]
    assert "nothing to commit" in await failure(repo.ops.commit("again"))
    assert await failure(repo.ops.commit("")) == "Commit message is required"


@pytest_twisted.ensureDeferred
async def test_stash_and_pop(repo: Repo) -> None:
    """
    stash with and without a message, pop restores; with no changes the
    answer says so; each change publishes a status event.
    """
    (repo.root / "a.txt").write_text("dirty")
    assert await repo.ops.stash("work in progress") == {"message": "Changes stashed"}
    assert (repo.root / "a.txt").read_text() == "a\n"
    assert "work in progress" in git(repo.root, "stash", "list")
    assert await repo.ops.stash_pop() == {"message": "Stashed changes restored"}
    assert (repo.root / "a.txt").read_text() == "dirty"
    assert await repo.ops.stash() == {"message": "Changes stashed"}
    assert await repo.ops.stash() == {"message": "No local changes to save"}
    assert await failure(repo.ops.stash_with_message("")) == "Stash message is required"
    await repo.ops.stash_pop()
    assert "No stash entries" in await failure(repo.ops.stash_pop())
    assert repo.events() == [
        ("status", "Stashed changes on main"),
        ("status", "Restored stashed changes on main"),
        ("status", "Stashed changes on main"),
        ("status", "Restored stashed changes on main"),
    ]


@pytest_twisted.ensureDeferred
async def test_checkout_file_restores_from_head(repo: Repo) -> None:
    """
    checkout-file restores one file (relative or absolute path) and refuses
    paths outside the rules without touching anything.
    """
    (repo.root / "a.txt").write_text("changed")
    assert await repo.ops.checkout_file("a.txt") == {"message": "Restored file: a.txt"}
    assert (repo.root / "a.txt").read_text() == "a\n"
    (repo.root / "a.txt").write_text("changed")
    await repo.ops.checkout_file(str(repo.root / "a.txt"))
    assert (repo.root / "a.txt").read_text() == "a\n"
    assert await failure(repo.ops.checkout_file()) == "File path is required"
    assert await failure(repo.ops.checkout_file("../x")) == "Path traversal detected: ../x"
    blocked = await failure(repo.ops.checkout_file(".git/config"))
    assert blocked == "Access to sensitive directory blocked: .git"
    assert repo.events() == [
        ("status", "Restored a.txt from HEAD"),
        ("status", "Restored a.txt from HEAD"),
    ]


@pytest_twisted.ensureDeferred
async def test_push_and_pull_through_a_bare_remote(repo: Repo, tmp_path: Path) -> None:
    """
    push sends a commit to the bare remote; pull brings in a commit another
    clone pushed; both publish their events.
    """
    remote = tmp_path / "remote.git"
    push_to_bare_remote(repo.root, remote)
    (repo.root / "p.txt").write_text("p")
    await repo.ops.commit("to push")
    assert await repo.ops.push() == {"message": "Pushed to remote repository"}
    assert git(remote, "log", "-1", "--format=%s", "main").strip() == "to push"

    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    git(other, "config", "user.name", "Other")
    git(other, "config", "user.email", "other@example.com")
    (other / "q.txt").write_text("q")
    git(other, "add", "q.txt")
    git(other, "commit", "-q", "-m", "from elsewhere")
    git(other, "push", "-q")
    assert await repo.ops.pull() == {"message": "Pulled from remote repository"}
    assert (repo.root / "q.txt").read_text() == "q"
    short = git(repo.root, "rev-parse", "--short", "HEAD").strip()
    assert repo.events()[1:] == [
        ("push", "Pushed main"),
        ("pull", f"Pulled into main, now at {short}"),
    ]


@pytest_twisted.ensureDeferred
async def test_push_and_pull_without_a_remote_fail_with_gits_message(repo: Repo) -> None:
    """
    With no remote configured, push and pull fail with git's own text.
    """
    assert "No configured push destination" in await failure(repo.ops.push())
    assert "no tracking information" in await failure(repo.ops.pull())
    assert repo.events() == []


@pytest_twisted.ensureDeferred
async def test_mutations_run_one_at_a_time(repo: Repo) -> None:
    """
    Concurrent mutations do not trip over git's index lock: five commits
    started at once all succeed.
    """
    from twisted.internet.defer import DeferredList, ensureDeferred

    for i in range(5):
        (repo.root / f"f{i}").write_text(str(i))
    calls = [ensureDeferred(repo.ops.commit(f"c{i}")) for i in range(5)]
    results = await DeferredList(calls, consumeErrors=True)
    errors = [r.value.message for ok, r in results if not ok]
    assert len(errors) == 4
    assert all("nothing to commit" in m for m in errors)
    assert git(repo.root, "status", "--porcelain") == ""
