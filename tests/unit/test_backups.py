"""
The backup operations on real directories: what a snapshot takes, exact
restores that can be undone, refusals that write nothing, budgets,
ordering, and the events each operation publishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThread
from twisted.python.usage import UsageError

from cluso_router.router.procedures import ProcedureError
from cluso_router.service import EventBroadcaster
from cluso_router.tap import Options
from cluso_router.testing import RecordingPublisher
from cluso_router.workspace.backup_store import BACKUP_ID, MANIFEST_NAME, default_backup_dir
from cluso_router.workspace.backup_walk import Budget
from cluso_router.workspace.backups import (
    BACKUP,
    PROGRESS_STEPS,
    BackupOperations,
    BackupSettings,
    backup_key,
)
from cluso_router.workspace.ledger import FileChangeLedger
from cluso_router.workspace.paths import Workspace


@dataclass
class Backups:
    ops: BackupOperations
    root: Path
    storage: Path
    published: RecordingPublisher

    def events(self, channel: str) -> list[dict[str, Any]]:
        return [data for name, data in self.published.published if name == channel]

    def file_events(self) -> list[tuple[str, str]]:
        return [(d["file"], d["event"]) for d in self.events("files")]

    def backup_events(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.events("backup") if d["type"] == kind]

    def manifest_path(self, backup_id: str) -> Path:
        return Path(self.ops.store.path_of(backup_id)) / MANIFEST_NAME

    def stored(self) -> set[str]:
        """
        Every path stored under the backup directory, relative to it.
        """
        return {
            str(Path(d, name).relative_to(self.storage))
            for d, _, names in os.walk(self.storage)
            for name in names
        }


Make = Callable[..., Backups]


@pytest.fixture
def make(tmp_path: Path) -> Make:
    """
    Backup operations on C{tmp_path/root}, storing under
    C{tmp_path/storage}, with events recorded.
    """

    def make(
        budget: Budget | None = None,
        keep: int = 0,
        ignore: tuple[str, ...] = (),
        run_blocking: Any = None,
        wallclock: Callable[[], float] | None = None,
    ) -> Backups:
        from twisted.internet import reactor

        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        storage = tmp_path / "storage"
        published = RecordingPublisher()
        broadcaster = EventBroadcaster(published)
        settings = BackupSettings(str(storage), budget or Budget(), keep)
        extra: dict[str, Any] = {"wallclock": wallclock} if wallclock else {}
        ops = BackupOperations(
            Workspace(str(root)),
            settings,
            broadcaster,
            FileChangeLedger(broadcaster, clock=reactor),
            ignore,
            reactor=reactor,
            run_blocking=run_blocking,
            **extra,
        )
        return Backups(ops, root, storage, published)

    return make


def write(root: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)


def tree(root: Path) -> dict[str, bytes]:
    """
    Every regular file below C{root}, ignored and hidden ones too.
    """
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


async def refused(d: Any) -> str:
    with pytest.raises(ProcedureError) as info:
        await d
    return info.value.message


PROJECT: dict[str, bytes | str] = {
    "README.md": "# project\n",
    "src/app.py": "print('hello')\n",
    "src/data.bin": bytes(range(256)) * 40,
    "docs/guide/intro.md": "intro\n",
}


@pytest_twisted.ensureDeferred
async def test_restore_brings_back_exact_bytes_and_the_undo_reverts_it(make: Make) -> None:
    """
    After changing, deleting and adding files, a restore puts back every
    file of the backup with the same bytes (and checksums), the executable
    bit included, reports each change and the files it left alone, keeps
    the added file (no prune), and names the automatic snapshot taken just
    before; restoring that snapshot with prune gives back exactly the state
    before the restore.
    """
    b = make()
    write(b.root, PROJECT)
    (b.root / "src/app.py").chmod(0o755)
    original = tree(b.root)
    created = await b.ops.create("before the refactoring")
    assert created["files"] == sorted(original)
    assert created["totalBytes"] == sum(len(v) for v in original.values())
    assert created["automatic"] is False

    (b.root / "src/app.py").write_text("print('changed')\n")
    (b.root / "src/app.py").chmod(0o644)
    (b.root / "docs/guide/intro.md").unlink()
    (b.root / "docs/guide").rmdir()
    (b.root / "notes.txt").write_text("new work\n")
    before_restore = tree(b.root)

    result = await b.ops.restore(created["id"])

    assert result["message"] == f"Restored from backup: {created['id']}"
    assert sorted((c["file"], c["event"]) for c in result["changed"]) == [
        ("docs/guide", "addDir"),
        ("docs/guide/intro.md", "add"),
        ("src/app.py", "change"),
    ]
    assert result["unchanged"] == 2
    now = tree(b.root)
    assert now == {**original, "notes.txt": b"new work\n"}
    for name, content in original.items():
        assert hashlib.sha256(now[name]).digest() == hashlib.sha256(content).digest()
    assert os.access(b.root / "src/app.py", os.X_OK)

    undo = result["undoId"]
    assert BACKUP_ID.match(undo)
    listed = {x["id"]: x for x in (await b.ops.list_backups())["backups"]}
    assert listed[undo]["automatic"] is True
    assert listed[undo]["description"] == f"Before restoring {created['id']}"

    await b.ops.restore(undo, prune=True)
    assert tree(b.root) == before_restore
    assert not os.access(b.root / "src/app.py", os.X_OK)


@pytest_twisted.ensureDeferred
async def test_restore_keeps_files_not_in_the_backup_unless_pruning(make: Make) -> None:
    """
    Without prune a file the backup does not have stays; with prune it is
    deleted, but an ignored file (which no snapshot takes) is never pruned.
    """
    b = make()
    write(b.root, {".gitignore": "*.log\n", "a.txt": "a"})
    backup = await b.ops.create("base")
    write(b.root, {"b.txt": "b", "build.log": "log"})
    await b.ops.restore(backup["id"])
    assert set(tree(b.root)) == {".gitignore", "a.txt", "b.txt", "build.log"}
    result = await b.ops.restore(backup["id"], prune=True)
    assert result["changed"] == [{"file": "b.txt", "event": "unlink"}]
    assert set(tree(b.root)) == {".gitignore", "a.txt", "build.log"}


@pytest_twisted.ensureDeferred
async def test_ignored_and_blocked_files_never_enter_a_snapshot(make: Make) -> None:
    """
    .gitignore rules (nested files override, negations re-include, ignored
    directories are not entered), .git/info/exclude and --ignore patterns
    leave files out, and the blocked names, dotenv files in any case,
    caches, virtualenvs, temporary files, symlinks and FIFOs are never
    taken; nothing of them is stored either.
    """
    b = make(ignore=("*.tmp",))
    write(
        b.root,
        {
            ".gitignore": "*.log\nbuild/\n",
            "keep.txt": "k",
            "app.log": "ignored",
            "build/out.js": "ignored",
            "sub/.gitignore": "!important.log\nlocal.txt\n",
            "sub/important.log": "re-included",
            "sub/local.txt": "ignored below",
            "sub/other.log": "ignored above",
            "scratch.tmp": "--ignore",
            "excluded.txt": "info/exclude",
            ".git/info/exclude": "excluded.txt\n",
            ".git/config": "[core]",
            "node_modules/pkg/index.js": "x",
            "lib/node_modules/deep.js": "x",
            ".env": "SECRET=1",
            ".env.local": "SECRET=2",
            "config/.ENV.production": "SECRET=3",
            ".envrc": "export SECRET=4",
            ".ssh/id_rsa": "key",
            ".aws/credentials": "key",
            "src/__pycache__/m.cpython-311.pyc": "cache",
            ".DS_Store": "mac",
            ".venv/pyvenv.cfg": "home = /usr",
            ".venv/lib/site.py": "x",
            "env2/pyvenv.cfg": "home = /usr",
            "env2/bin/python": "x",
            "src/.main.py.ab12.cluso-tmp": "half a write",
            "src/main.py": "main",
        },
    )
    (b.root / "link.txt").symlink_to(b.root / "keep.txt")
    (b.root / "outside").symlink_to(b.root.parent)
    os.mkfifo(b.root / "pipe")

    backup = await b.ops.create("filtered")

    assert backup["files"] == [
        ".gitignore",
        "keep.txt",
        "src/main.py",
        "sub/.gitignore",
        "sub/important.log",
    ]
    stored = {p.split("/files/", 1)[1] for p in b.stored() if "/files/" in p}
    assert stored == set(backup["files"])
    assert not any("SECRET" in str(c) for c in tree(b.storage).values())


@pytest_twisted.ensureDeferred
async def test_backup_storage_under_the_root_is_never_snapshotted(
    make: Make, tmp_path: Path
) -> None:
    """
    With the backup directory inside the root, a snapshot leaves it out,
    so backups never contain backups.
    """
    from twisted.internet import reactor

    root = tmp_path / "root"
    write(root, {"a.txt": "a"})
    published = RecordingPublisher()
    broadcaster = EventBroadcaster(published)
    ops = BackupOperations(
        Workspace(str(root)),
        BackupSettings(str(root / "backups")),
        broadcaster,
        FileChangeLedger(broadcaster, clock=reactor),
        reactor=reactor,
    )
    await ops.create("one")
    second = await ops.create("two")
    assert second["files"] == ["a.txt"]


@pytest.mark.parametrize(
    ("tampered", "why"),
    [
        ("../outside.txt", "names a path outside the root: ../outside.txt"),
        ("src/../../outside.txt", "names a path outside the root: src/../../outside.txt"),
        ("..\\outside.txt", "names a path outside the root: ..\\outside.txt"),
        ("ABSOLUTE", "names an absolute path: "),
        (".git/hooks/pre-commit", "names a path a backup never holds: .git/hooks/pre-commit"),
        (".env", "names a path a backup never holds: .env"),
        ("src//app.py", "names a path that is not normalised: src//app.py"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_tampered_manifest_is_refused_with_nothing_written(
    make: Make, tmp_path: Path, tampered: str, why: str
) -> None:
    """
    A manifest edited to name a path outside the root (.., backslashes, an
    absolute path), a blocked or secret name, or an unnormalised path is
    refused before anything is written: no file in or outside the root
    changes, no undo snapshot is taken, no file event is published.
    """
    outside = tmp_path / "outside.txt"
    if tampered == "ABSOLUTE":
        tampered = str(outside)
        why += str(outside)
    b = make()
    write(b.root, PROJECT)
    backup = await b.ops.create("base")
    manifest_path = b.manifest_path(backup["id"])
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["path"] = tampered
    manifest_path.write_text(json.dumps(manifest))
    (b.root / "src/app.py").write_text("changed")
    before = tree(b.root)
    stored_before = b.stored()
    b.published.published.clear()

    message = await refused(b.ops.restore(backup["id"]))

    assert message == f"Backup {backup['id']} is damaged: its manifest {why}"
    assert tree(b.root) == before
    assert not outside.exists()
    assert b.stored() == stored_before
    assert b.published.published == []
    listed = (await b.ops.list_backups())["backups"]
    assert listed == []
    with pytest.raises(ProcedureError, match="is damaged"):
        await b.ops.get_content(backup["id"], "README.md")


@pytest_twisted.ensureDeferred
async def test_a_symlink_leading_out_of_the_root_refuses_the_restore(
    make: Make, tmp_path: Path
) -> None:
    """
    A directory of the backup that is now a symlink leading outside the
    root refuses the whole restore, as for any write: nothing is written
    there or anywhere else.
    """
    b = make()
    write(b.root, {"a.txt": "a", "docs/b.txt": "b"})
    backup = await b.ops.create("base")
    (b.root / "docs/b.txt").unlink()
    (b.root / "docs").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (b.root / "docs").symlink_to(elsewhere)
    (b.root / "a.txt").write_text("changed")

    message = await refused(b.ops.restore(backup["id"]))

    assert message == "Restore refused: Path leaves the workspace through a symlink: docs/b.txt"
    assert list(elsewhere.iterdir()) == []
    assert (b.root / "a.txt").read_text() == "changed"


@pytest.mark.parametrize("obstacle", ["directory", "symlink", "parent file"])
@pytest_twisted.ensureDeferred
async def test_a_path_taken_by_something_else_refuses_the_restore(
    make: Make, obstacle: str
) -> None:
    """
    A backup file whose place is now a directory, a symlink, or below a
    file refuses the restore with a reason, before anything is written.
    """
    b = make()
    write(b.root, {"a.txt": "a", "d/f.txt": "f", "z.txt": "z"})
    backup = await b.ops.create("base")
    (b.root / "z.txt").write_text("changed")
    if obstacle == "directory":
        (b.root / "a.txt").unlink()
        (b.root / "a.txt").mkdir()
        expected = "a.txt is a directory now; move it away first"
    elif obstacle == "symlink":
        (b.root / "a.txt").unlink()
        (b.root / "a.txt").symlink_to("z.txt")
        expected = "a.txt is a symbolic link now; move it away first"
    else:
        (b.root / "d/f.txt").unlink()
        (b.root / "d").rmdir()
        (b.root / "d").write_text("a file")
        expected = "d/f.txt needs the directory d, which is a file now"
    before = tree(b.root)
    message = await refused(b.ops.restore(backup["id"]))
    assert message == f"Restore refused: {expected}"
    assert tree(b.root) == before


@pytest_twisted.ensureDeferred
async def test_a_stored_file_that_fails_its_checksum_is_not_restored(make: Make) -> None:
    """
    A stored file changed after the snapshot fails verification: the
    restore is refused before anything is written, and reading it is
    refused too.
    """
    b = make()
    write(b.root, PROJECT)
    backup = await b.ops.create("base")
    stored = Path(b.ops.store.stored_file(backup["id"], "src/app.py"))
    stored.write_text("print('tampered')\n")
    (b.root / "README.md").write_text("changed")
    before = tree(b.root)

    message = await refused(b.ops.restore(backup["id"]))

    assert message == f"Backup {backup['id']} is damaged: src/app.py does not match its checksum"
    assert tree(b.root) == before
    assert await refused(b.ops.get_content(backup["id"], "src/app.py")) == message


@pytest_twisted.ensureDeferred
async def test_backups_are_copies_not_links(make: Make) -> None:
    """
    A stored file is its own inode (a hard link would share it): a project
    file rewritten in place after the snapshot leaves the backup as it was.
    """
    b = make()
    write(b.root, {"a.txt": "original"})
    backup = await b.ops.create("base")
    stored = os.stat(b.ops.store.stored_file(backup["id"], "a.txt"))
    assert stored.st_nlink == 1
    assert stored.st_ino != os.stat(b.root / "a.txt").st_ino
    with open(b.root / "a.txt", "r+") as f:
        f.write("CHANGED!")
    assert await b.ops.get_content(backup["id"], "a.txt") == {"content": "original"}


@pytest_twisted.ensureDeferred
async def test_the_size_budget_refuses_an_oversized_snapshot(make: Make) -> None:
    """
    A snapshot over the file or byte budget is refused with a message
    naming the option to raise, and leaves nothing in the storage; a
    restore whose undo snapshot would exceed it is refused before writing.
    """
    b = make(budget=Budget(max_files=3, max_bytes=1000))
    write(b.root, {f"f{i}.txt": "x" for i in range(4)})
    message = await refused(b.ops.create("too many"))
    assert message == (
        "Backup refused: the project has more than 3 files to back up (the budget set by "
        "--backup-max-files); add generated files to .gitignore or raise the budget"
    )
    assert b.stored() == set()
    assert b.published.published == []

    (b.root / "f3.txt").unlink()
    backup = await b.ops.create("fits")
    (b.root / "f0.txt").write_bytes(b"x" * 2000)
    message = await refused(b.ops.restore(backup["id"]))
    assert message == (
        "Restore refused: the current state could not be saved first. Backup refused: the "
        "project has more than 1000 bytes to back up (the budget of 1000 bytes set by "
        "--backup-max-bytes); add generated files to .gitignore or raise the budget"
    )
    assert (b.root / "f0.txt").read_bytes() == b"x" * 2000
    assert len((await b.ops.list_backups())["backups"]) == 1


@pytest_twisted.ensureDeferred
async def test_list_is_newest_first_with_strictly_ordered_times(make: Make) -> None:
    """
    Backups are listed newest first; backups made within one millisecond
    still get distinct, increasing creation times and ids in the
    original's form.
    """
    b = make(wallclock=lambda: 1733758245.5)
    write(b.root, {"a.txt": "a"})
    made = [await b.ops.create(f"backup {n}") for n in range(3)]
    listed = (await b.ops.list_backups())["backups"]
    assert [x["description"] for x in listed] == ["backup 2", "backup 1", "backup 0"]
    assert [x["createdAt"] for x in reversed(listed)] == [
        "2024-12-09T15:30:45.500Z",
        "2024-12-09T15:30:45.501Z",
        "2024-12-09T15:30:45.502Z",
    ]
    assert all(re.fullmatch(r"20241209153045-[a-z0-9]{6}", x["id"]) for x in made)
    assert listed == list(reversed(made))


@pytest_twisted.ensureDeferred
async def test_content_of_a_backup_file_and_traversal_refused(make: Make) -> None:
    """
    A file of a backup is read back as text; a path leaving the backup
    (.., absolute) is refused as the original refused it, and a path the
    backup does not list is not read, whatever the storage holds.
    """
    b = make()
    write(b.root, PROJECT)
    backup = await b.ops.create("base")
    backup_id = backup["id"]
    assert await b.ops.get_content(backup_id, "src/app.py") == {"content": "print('hello')\n"}
    assert await b.ops.get_content(backup_id, "./src/../src/app.py") == {
        "content": "print('hello')\n"
    }
    for path in ("../../../etc/passwd", "/etc/passwd", "src/../../x", ".."):
        assert await refused(b.ops.get_content(backup_id, path)) == "Invalid file path", path
    assert await refused(b.ops.get_content(backup_id, MANIFEST_NAME)) == (
        f"Failed to read backup file: {MANIFEST_NAME} is not in {backup_id}"
    )
    assert await refused(b.ops.get_content(backup_id, "")) == (
        "Backup ID and file path are required"
    )
    assert await refused(b.ops.get_content("nope", "a")) == "Invalid backup ID format"


@pytest_twisted.ensureDeferred
async def test_bad_arguments_get_the_originals_messages(make: Make) -> None:
    """
    Missing or malformed arguments are refused with the original's texts,
    and a description longer than the limit with a clear one.
    """
    b = make()
    assert await refused(b.ops.create()) == "Description is required"
    assert await refused(b.ops.create("")) == "Description is required"
    assert await refused(b.ops.create(5)) == "Description is required"
    assert await refused(b.ops.create("x" * 501)) == (
        "Description is too long: at most 500 characters"
    )
    assert await refused(b.ops.restore()) == "Backup ID is required"
    assert await refused(b.ops.restore("../x")) == "Invalid backup ID format"
    assert await refused(b.ops.restore("20241209153045-abcdef", prune="yes")) == (
        "prune must be true or false"
    )
    assert await refused(b.ops.restore("20241209153045-abcdef")) == (
        "Backup not found: 20241209153045-abcdef"
    )
    assert await refused(b.ops.delete("20241209153045-abcdef")) == (
        "Backup not found: 20241209153045-abcdef"
    )
    assert await refused(b.ops.delete("cleanup")) == "Invalid backup ID format"


@pytest_twisted.ensureDeferred
async def test_events_of_create_restore_delete_and_cleanup(make: Make) -> None:
    """
    created (with counts, not file lists), restored (with the changes),
    deleted: one event each on backup; the restore's file changes appear
    once each on files, directories before their files.
    """
    b = make()
    write(b.root, {"a.txt": "a", "d/e/f.txt": "f"})
    backup = await b.ops.create("base")
    assert b.backup_events("created") == [
        {
            "type": "created",
            "id": backup["id"],
            "description": "base",
            "createdAt": backup["createdAt"],
            "totalBytes": 2,
            "automatic": False,
            "fileCount": 2,
            "timestamp": b.backup_events("created")[0]["timestamp"],
        }
    ]
    (b.root / "a.txt").write_text("changed")
    (b.root / "d/e/f.txt").unlink()
    (b.root / "d/e").rmdir()
    (b.root / "d").rmdir()
    b.published.published.clear()

    result = await b.ops.restore(backup["id"])

    assert b.file_events() == [
        ("a.txt", "change"),
        ("d", "addDir"),
        ("d/e", "addDir"),
        ("d/e/f.txt", "add"),
    ]
    created, restored = b.events("backup")
    assert (created["type"], created["id"], created["automatic"]) == (
        "created",
        result["undoId"],
        True,
    )
    assert restored["type"] == "restored"
    assert restored["changed"] == result["changed"]
    assert (restored["changedCount"], restored["unchanged"], restored["pruned"]) == (4, 0, False)
    described = set(BACKUP.schema["properties"])
    for event in (created, restored, *BACKUP.examples):
        assert set(BACKUP.schema["required"]) <= set(event) <= described

    b.published.published.clear()
    await b.ops.delete(backup["id"])
    assert [(e["type"], e["id"]) for e in b.events("backup")] == [("deleted", backup["id"])]
    b.published.published.clear()
    assert await b.ops.cleanup() == {"message": "Deleted 1 backups", "count": 1}
    assert [(e["type"], e["id"]) for e in b.events("backup")] == [("deleted", result["undoId"])]
    assert (await b.ops.list_backups())["backups"] == []
    assert await b.ops.cleanup() == {"message": "Deleted 0 backups", "count": 0}


@pytest_twisted.ensureDeferred
async def test_large_snapshots_and_restores_report_progress(make: Make) -> None:
    """
    A snapshot of many files reports progress in at most ten steps, its
    counts rising to the totals, before created; a restore reports its
    verification and its writing the same way. Small jobs report none.
    """
    b = make()
    write(b.root, {"one.txt": "1"})
    await b.ops.create("small")
    assert b.backup_events("progress") == []
    write(b.root, {f"f{n:03}.txt": "x" * n for n in range(250)})
    b.published.published.clear()

    backup = await b.ops.create("large")

    kinds = [e["type"] for e in b.events("backup")]
    assert kinds == ["progress"] * PROGRESS_STEPS + ["created"]
    progress = b.backup_events("progress")
    assert {(e["id"], e["operation"], e["phase"]) for e in progress} == {
        (backup["id"], "create", "copy")
    }
    files = [e["files"] for e in progress]
    assert files == sorted(files)
    assert (progress[-1]["files"], progress[-1]["bytes"]) == (251, backup["totalBytes"])
    assert progress[-1]["totalFiles"] == 251
    assert {backup_key(e) for e in progress} == {f"progress:create:{backup['id']}"}
    assert backup_key(b.backup_events("created")[0]) is None
    described = set(BACKUP.schema["properties"])
    assert all(set(e) <= described for e in b.events("backup"))

    b.published.published.clear()
    await b.ops.restore(backup["id"])
    phases = [(e["operation"], e["phase"]) for e in b.backup_events("progress")]
    assert phases == (
        [("restore", "verify")] * PROGRESS_STEPS
        + [("create", "copy")] * PROGRESS_STEPS
        + [("restore", "write")] * PROGRESS_STEPS
    )


@pytest_twisted.ensureDeferred
async def test_old_backups_beyond_the_kept_number_are_deleted(make: Make) -> None:
    """
    With keep=2, each new backup deletes the oldest beyond two (announced
    as deleted); restoring the oldest kept one keeps it and its undo even
    though that makes three, and the next backup trims back to two.
    """
    b = make(keep=2)
    write(b.root, {"a.txt": "a"})
    first = await b.ops.create("1")
    second = await b.ops.create("2")
    third = await b.ops.create("3")
    listed = [x["id"] for x in (await b.ops.list_backups())["backups"]]
    assert listed == [third["id"], second["id"]]
    assert [e["id"] for e in b.backup_events("deleted")] == [first["id"]]

    result = await b.ops.restore(second["id"])
    listed = [x["id"] for x in (await b.ops.list_backups())["backups"]]
    assert listed == [result["undoId"], third["id"], second["id"]]
    fourth = await b.ops.create("4")
    listed = [x["id"] for x in (await b.ops.list_backups())["backups"]]
    assert listed == [fourth["id"], result["undoId"]]


@pytest_twisted.ensureDeferred
async def test_concurrent_restores_and_snapshots_run_one_at_a_time(make: Make) -> None:
    """
    Two restores and a snapshot started together never have file work
    running at the same time, and all succeed; the second restore's undo
    snapshot holds the result of the first.
    """

    running = 0
    most = 0

    def tracked(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        def job() -> Any:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                return f(*args, **kwargs)
            finally:
                running -= 1

        return deferToThread(job)

    b = make(run_blocking=tracked)
    write(b.root, {"a.txt": "one", **{f"pad{n}.txt": "x" * 4096 for n in range(50)}})
    one = await b.ops.create("one")
    (b.root / "a.txt").write_text("two")
    two = await b.ops.create("two")

    results = await DeferredList(
        [
            Deferred.fromCoroutine(b.ops.restore(one["id"])),
            Deferred.fromCoroutine(b.ops.restore(two["id"])),
            Deferred.fromCoroutine(b.ops.create("three")),
        ],
        consumeErrors=True,
    )
    assert all(ok for ok, _ in results), results
    assert most == 1
    first, second, _ = (value for _, value in results)
    assert await b.ops.get_content(second["undoId"], "a.txt") == {"content": "one"}
    assert (b.root / "a.txt").read_text() == "two"
    assert first["changed"] == [{"file": "a.txt", "event": "change"}]


def test_the_default_storage_follows_xdg_data_home(tmp_path: Path) -> None:
    """
    Backups go to $XDG_DATA_HOME/cluso-router/backups, or to
    ~/.local/share/... when XDG_DATA_HOME is unset or relative.
    """
    assert default_backup_dir({"XDG_DATA_HOME": str(tmp_path)}) == str(
        tmp_path / "cluso-router" / "backups"
    )
    home = os.path.expanduser("~")
    for environ in ({}, {"XDG_DATA_HOME": "relative/dir"}):
        assert default_backup_dir(environ) == os.path.join(
            home, ".local", "share", "cluso-router", "backups"
        )
    assert BackupSettings(str(tmp_path / "x")).directory == str(tmp_path / "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        BackupSettings(str(tmp_path / "file"))
    with pytest.raises(ValueError, match="at least 1 file"):
        Budget(max_files=0)


def test_the_backup_options_reach_the_server_config(tmp_path: Path) -> None:
    """
    --backup-dir, --backup-max-files, --backup-max-bytes and --backup-keep
    become the server's backup settings; without them the defaults apply
    (storage under XDG_DATA_HOME); a budget below one is a usage error.
    """
    options = Options()
    options.parseOptions(
        [
            "--root",
            str(tmp_path),
            "--backup-dir",
            str(tmp_path / "store"),
            "--backup-max-files",
            "5",
            "--backup-max-bytes",
            "100",
            "--backup-keep",
            "3",
        ]
    )
    assert options["config"].backups == BackupSettings(
        str(tmp_path / "store"), Budget(max_files=5, max_bytes=100), keep=3
    )
    options = Options()
    options.parseOptions(["--root", str(tmp_path)])
    assert options["config"].backups == BackupSettings()
    assert options["config"].backups.directory == default_backup_dir()
    with pytest.raises(UsageError, match="at least 1 file"):
        Options().parseOptions(["--root", str(tmp_path), "--backup-max-files", "0"])


@pytest_twisted.ensureDeferred
async def test_a_cloned_copy_is_hashed_from_the_clone(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Where the filesystem clones (FICLONE), nothing is copied by hand and
    the checksum is taken from the clone itself; a restore from it gives
    the same bytes. (This machine's ext4 cannot clone, so the clone is
    simulated here; the other tests take the plain-copy path.)
    """
    from cluso_router.workspace import backup_store

    cloned: list[int] = []

    def clone(source: int, dest: int) -> bool:
        os.sendfile(dest, source, 0, os.fstat(source).st_size)
        cloned.append(dest)
        return True

    monkeypatch.setattr(backup_store, "_clone", clone)
    monkeypatch.setattr(backup_store, "_copy", None)
    b = make()
    write(b.root, PROJECT)
    backup = await b.ops.create("cloned")
    assert len(cloned) == len(PROJECT)
    manifest = json.loads(b.manifest_path(backup["id"]).read_text())
    for entry in manifest["files"]:
        content = PROJECT[entry["path"]]
        data = content.encode() if isinstance(content, str) else content
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    (b.root / "src/data.bin").write_bytes(b"")
    await b.ops.restore(backup["id"])
    assert (b.root / "src/data.bin").read_bytes() == PROJECT["src/data.bin"]
