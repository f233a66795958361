"""
Project backups for every transport: snapshot, list, inspect, restore,
delete, clean up.

Like L{cluso_router.workspace.files.FileOperations}, each public method
takes the raw JSON values a client sent, returns the original server's
C{data} shape and raises L{ProcedureError} with its error text. Snapshots
and restores of one project run one at a time (a L{DeferredLock}), and
their file work runs in the reactor's thread pool.

A restore never loses work: it refuses before writing anything when a
path of the backup is not allowed or a stored file fails its checksum;
then it snapshots the current state (the undo, an ordinary backup), and
only then writes, each file atomically. Files not in the backup stay
unless the client asks for C{prune}; pruned files are in the undo too.

Events go to the C{backup} channel: C{created}, C{restored} (with the
files changed), C{deleted}, and C{progress} for large snapshots and
restores; each file a restore changes is announced once on C{files}
through the L{FileChangeLedger}, the moment it is written.
"""

from __future__ import annotations

import math
import os
import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThreadPool

from cluso_router._reactor import default_reactor
from cluso_router._time import TIMESTAMP_SCHEMA, iso_timestamp
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport
from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.backup_restore import Outcome, Seen, plan, write
from cluso_router.workspace.backup_store import (
    BACKUP_ID,
    MAX_DESCRIPTION,
    BackupStore,
    Manifest,
    default_backup_dir,
    new_backup_id,
)
from cluso_router.workspace.backup_walk import Budget, BudgetExceeded, Candidate, SnapshotWalk
from cluso_router.workspace.files import Runner
from cluso_router.workspace.ledger import FileChangeLedger
from cluso_router.workspace.paths import Workspace

BackupEventType = Literal["created", "restored", "deleted", "progress"]

#: Backups kept per project; the oldest beyond are deleted after each new one.
DEFAULT_KEEP: Final = 20
#: A snapshot or restore reports progress when it has this many files...
PROGRESS_MIN_FILES: Final = 100
#: ... or this many bytes; in ten steps.
PROGRESS_MIN_BYTES: Final = 8 * 1024 * 1024
PROGRESS_STEPS: Final = 10
#: Most changed files named in one C{restored} event; the answer names all.
EVENT_FILES_LIMIT: Final = 1000


def backup_key(data: Any) -> str | None:
    """
    Progress of one operation on one backup is superseded by its next
    progress; every other backup event reaches the client.
    """
    if isinstance(data, dict) and data.get("type") == "progress":
        return f"progress:{data.get('operation')}:{data.get('id')}"
    return None


_ID: Final = {"type": "string", "pattern": BACKUP_ID.pattern}
_COUNT: Final = {"type": "integer", "minimum": 0}

BACKUP: Final = ChannelSpec(
    "backup",
    "Project backups: one was created, restored (with the files it changed) or deleted, "
    "and progress of large snapshots and restores",
    conflate=backup_key,
    schema={
        "type": "object",
        "required": ["type", "id", "timestamp"],
        "properties": {
            "type": {"type": "string", "enum": ["created", "restored", "deleted", "progress"]},
            "id": _ID,
            "timestamp": TIMESTAMP_SCHEMA,
            "description": {"type": "string", "description": "created"},
            "createdAt": {**TIMESTAMP_SCHEMA, "description": "created"},
            "automatic": {
                "type": "boolean",
                "description": "created: taken by the server before a restore",
            },
            "fileCount": {**_COUNT, "description": "created"},
            "totalBytes": {**_COUNT, "description": "created, progress"},
            "undoId": {**_ID, "description": "restored: the snapshot taken just before"},
            "pruned": {"type": "boolean", "description": "restored"},
            "changed": {
                "type": "array",
                "description": f"restored: the changes made, at most {EVENT_FILES_LIMIT}",
                "items": {
                    "type": "object",
                    "required": ["file", "event"],
                    "properties": {
                        "file": {"type": "string"},
                        "event": {"type": "string", "enum": ["add", "change", "unlink", "addDir"]},
                    },
                },
            },
            "changedCount": {**_COUNT, "description": "restored: all changes made"},
            "unchanged": {**_COUNT, "description": "restored: files already as in the backup"},
            "operation": {"type": "string", "enum": ["create", "restore"]},
            "phase": {"type": "string", "enum": ["copy", "verify", "write"]},
            "files": {**_COUNT, "description": "progress: files done"},
            "totalFiles": {**_COUNT, "description": "progress"},
            "bytes": {**_COUNT, "description": "progress: bytes done"},
        },
    },
    examples=(
        {
            "type": "created",
            "id": "20241209153045-k3j9x2",
            "description": "Before the refactoring",
            "createdAt": "2024-12-09T15:30:45.123Z",
            "automatic": False,
            "fileCount": 42,
            "totalBytes": 180224,
            "timestamp": "2024-12-09T15:30:45.301Z",
        },
        {
            "type": "restored",
            "id": "20241209153045-k3j9x2",
            "undoId": "20241209160112-p0q7zz",
            "pruned": False,
            "changed": [{"file": "src/app.ts", "event": "change"}],
            "changedCount": 1,
            "unchanged": 41,
            "timestamp": "2024-12-09T16:01:12.880Z",
        },
    ),
)


def backup_event(broadcaster: Broadcaster, type: BackupEventType, **fields: Any) -> DeliveryReport:
    """
    Publish an event on C{backup}, stamped like the original's payloads.
    """
    return broadcaster.emit_stamped(BACKUP.channel, {"type": type, **fields})


@dataclass(frozen=True)
class BackupSettings:
    """
    Where a server keeps backups and how much: C{--backup-dir} (made
    absolute), C{--backup-max-files} and C{--backup-max-bytes} (the
    budget), C{--backup-keep} (0: no automatic deletion).
    """

    directory: str = field(default_factory=default_backup_dir)
    budget: Budget = field(default_factory=Budget)
    keep: int = DEFAULT_KEEP

    def __post_init__(self) -> None:
        directory = os.path.abspath(os.path.expanduser(self.directory))
        object.__setattr__(self, "directory", directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"the backup directory is not a directory: {directory}")
        if self.keep < 0:
            raise ValueError("the number of backups kept must not be negative")


class _Progress:
    """
    Turns per-file counts from a worker thread into at most
    L{PROGRESS_STEPS} C{progress} events, for large jobs only.
    """

    def __init__(
        self, send: Callable[[dict[str, Any]], None], fields: dict[str, Any], files: int, size: int
    ) -> None:
        self._send = send
        self._fields = {**fields, "totalFiles": files, "totalBytes": size}
        self._files = files
        self._size = size
        self._large = files >= PROGRESS_MIN_FILES or size >= PROGRESS_MIN_BYTES
        self._step = 0

    def __call__(self, files: int, size: int) -> None:
        if not self._large:
            return
        done = max(files / max(self._files, 1), size / max(self._size, 1))
        step = min(PROGRESS_STEPS, math.floor(done * PROGRESS_STEPS))
        if step > self._step:
            self._step = step
            self._send({**self._fields, "files": files, "bytes": size})


class BackupOperations:
    """
    The C{backup} operations of one workspace.

    @param ignore: C{.gitignore}-style patterns snapshots leave out (the
        server's C{--ignore}), whatever the project's rules say.
    @param run_blocking: runs a blocking callable in a worker thread and
        returns a Deferred of its result; the reactor's thread pool by
        default.
    @param from_thread: runs a callable with arguments on the reactor
        thread, from a worker thread; C{reactor.callFromThread} by default.
    @param wallclock: the time backups are stamped with.
    """

    def __init__(
        self,
        workspace: Workspace,
        settings: BackupSettings,
        broadcaster: Broadcaster,
        changes: FileChangeLedger,
        ignore: Iterable[str] = (),
        reactor: Any = None,
        run_blocking: Runner | None = None,
        from_thread: Callable[..., None] | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        reactor = reactor if reactor is not None else default_reactor()
        self.workspace = workspace
        self.settings = settings
        self.store = BackupStore(settings.directory, workspace.root)
        self._walk = SnapshotWalk(
            workspace.root, ignore, skip=[os.path.realpath(settings.directory)]
        )
        self._broadcaster = broadcaster
        self._changes = changes
        self._run: Runner = run_blocking or partial(_in_thread, reactor)
        self._from_thread = from_thread or reactor.callFromThread
        self._wallclock = wallclock
        self._last_ms = 0
        self._lock = DeferredLock()

    # reading

    async def list_backups(self) -> dict[str, Any]:
        manifests: list[Manifest] = await self._run(self.store.manifests)
        return {"backups": [manifest.summary() for manifest in manifests]}

    async def get_content(self, backup_id: Any = None, file: Any = None) -> dict[str, str]:
        if not backup_id or not file:
            raise ProcedureError("Backup ID and file path are required")
        checked = _backup_id(backup_id)
        if not isinstance(file, str):
            raise ProcedureError("Invalid file path")
        wanted = posixpath.normpath(file)
        if wanted.startswith(("..", "/")):
            raise ProcedureError("Invalid file path")
        data: bytes = await self._run(self._read_stored, checked, wanted)
        return {"content": data.decode("utf-8", "replace")}

    def _read_stored(self, backup_id: str, relative: str) -> bytes:
        manifest = self.store.load(backup_id)
        entry = manifest.entry(relative)
        if entry is None:
            raise ProcedureError(f"Failed to read backup file: {relative} is not in {backup_id}")
        return self.store.read_verified(manifest, entry)

    # changing

    async def create(self, description: Any = None) -> dict[str, Any]:
        if not description or not isinstance(description, str):
            raise ProcedureError("Description is required")
        if len(description) > MAX_DESCRIPTION:
            raise ProcedureError(f"Description is too long: at most {MAX_DESCRIPTION} characters")
        async with self._lock:
            try:
                manifest, _ = await self._snapshot(description, automatic=False)
            except BudgetExceeded as e:
                raise ProcedureError(e.message, "backup_too_large") from None
            except OSError as e:
                raise ProcedureError(f"Failed to create backup: {_why(e)}") from None
            await self._retain({manifest.id})
        return manifest.summary()

    async def restore(self, backup_id: Any = None, prune: Any = None) -> dict[str, Any]:
        checked = _backup_id(backup_id)
        if prune is not None and not isinstance(prune, bool):
            raise ProcedureError("prune must be true or false")
        async with self._lock:
            manifest: Manifest = await self._run(self.store.load, checked)
            placements = await self._run(plan, self.workspace, manifest)
            total = manifest.total_bytes
            verifying = self._progress("restore", checked, len(placements), total, phase="verify")
            await self._run(self.store.verify, manifest, verifying)
            targets = [p.relative for p in placements]
            try:
                undo, candidates = await self._snapshot(
                    f"Before restoring {checked}", automatic=True, also=targets
                )
            except (BudgetExceeded, ProcedureError, OSError) as e:
                raise ProcedureError(
                    f"Restore refused: the current state could not be saved first. {_why(e)}",
                    "backup_too_large" if isinstance(e, BudgetExceeded) else "restore_refused",
                ) from None
            saved = {entry.path: entry.sha256 for entry in undo.entries}
            seen = {
                c.relative: Seen(saved[c.relative], c.size, c.mtime_ns)
                for c in candidates
                if c.relative in saved
            }
            wanted = set(targets)
            prune_paths = (
                [c.relative for c in candidates if c.relative not in wanted] if prune else []
            )
            outcome = Outcome()
            writing = self._progress("restore", checked, len(placements), total, phase="write")
            announce = partial(self._from_thread, self._changes.changed)
            try:
                await self._run(
                    write,
                    self.workspace,
                    self.store,
                    manifest,
                    placements,
                    seen,
                    prune_paths,
                    outcome,
                    announce,
                    writing,
                )
            except (OSError, ProcedureError) as e:
                raise ProcedureError(
                    f"Failed to restore backup: {_why(e)}. The state before the restore is "
                    f"backup {undo.id}"
                ) from None
            self._restored(checked, undo.id, bool(prune), outcome)
            await self._retain({checked, undo.id})
        return {
            "message": f"Restored from backup: {checked}",
            "id": checked,
            "undoId": undo.id,
            "changed": [{"file": file, "event": event} for file, event in outcome.changed],
            "unchanged": outcome.unchanged,
        }

    async def delete(self, backup_id: Any = None) -> dict[str, str]:
        checked = _backup_id(backup_id)
        async with self._lock:
            await self._run(self.store.delete, checked)
            self._emit("deleted", id=checked)
        return {"message": f"Deleted backup: {checked}"}

    async def cleanup(self) -> dict[str, Any]:
        async with self._lock:
            ids: list[str] = await self._run(self.store.ids)
            for backup_id in sorted(ids):
                await self._run(self.store.delete, backup_id)
                self._emit("deleted", id=backup_id)
            await self._run(self.store.remove_leftovers)
        return {"message": f"Deleted {len(ids)} backups", "count": len(ids)}

    # the parts

    async def _snapshot(
        self, description: str, automatic: bool, also: Iterable[str] = ()
    ) -> tuple[Manifest, list[Candidate]]:
        budget = self.settings.budget
        created = self._next_time()
        backup_id = new_backup_id(created)
        candidates: list[Candidate] = await self._run(self._walk.files, budget, list(also))
        progress = self._progress(
            "create", backup_id, len(candidates), sum(c.size for c in candidates), phase="copy"
        )
        manifest: Manifest = await self._run(
            self.store.snapshot,
            backup_id,
            description,
            iso_timestamp(created),
            automatic,
            candidates,
            budget,
            progress,
        )
        summary = manifest.summary()
        del summary["files"]
        self._emit("created", **summary, fileCount=len(manifest.entries))
        return manifest, candidates

    async def _retain(self, protect: set[str]) -> None:
        """
        Delete the oldest backups beyond the number kept, never those in
        C{protect}.
        """
        keep = self.settings.keep
        if not keep:
            return
        manifests: list[Manifest] = await self._run(self.store.manifests)
        for manifest in manifests[keep:]:
            if manifest.id not in protect:
                await self._run(self.store.delete, manifest.id)
                self._emit("deleted", id=manifest.id)

    def _next_time(self) -> float:
        """
        Now, but always at least a millisecond after the previous backup,
        so C{createdAt} orders backups strictly.
        """
        ms = max(math.floor(self._wallclock() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return ms / 1000

    def _progress(
        self, operation: str, backup_id: str, files: int, size: int, phase: str
    ) -> _Progress:
        def send(fields: dict[str, Any]) -> None:
            self._from_thread(self._emit, "progress", **fields)

        fields = {"id": backup_id, "operation": operation, "phase": phase}
        return _Progress(send, fields, files, size)

    def _restored(self, backup_id: str, undo_id: str, pruned: bool, outcome: Outcome) -> None:
        changed = [{"file": f, "event": e} for f, e in outcome.changed[:EVENT_FILES_LIMIT]]
        self._emit(
            "restored",
            id=backup_id,
            undoId=undo_id,
            pruned=pruned,
            changed=changed,
            changedCount=len(outcome.changed),
            unchanged=outcome.unchanged,
        )

    def _emit(self, type: BackupEventType, **fields: Any) -> None:
        backup_event(self._broadcaster, type, **fields)


def _backup_id(value: Any) -> str:
    if value is None or value == "":
        raise ProcedureError("Backup ID is required")
    if not isinstance(value, str) or not BACKUP_ID.match(value):
        raise ProcedureError("Invalid backup ID format")
    return value


def _why(error: Exception) -> str:
    if isinstance(error, BudgetExceeded | ProcedureError):
        return error.message
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return str(error)


def _in_thread(reactor: Any, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)
