"""
Putting a backup's files back under the root, without writing anywhere
else and without losing anything that is there.

L{plan} runs before anything is written: every path of the manifest
(already checked by L{Manifest.from_json}) is resolved by the same
L{Workspace} rules as every other write, so a path that reaches outside
the root, through C{..}, an absolute path or a symlink, or names a blocked
directory refuses the whole restore. A path whose place is now taken by a
directory or a symlink, or that passes through a file, refuses it too.

L{write} then puts each file in place through directory file descriptors:
the parent is opened from the root one component at a time without
following symlinks (missing ones are created), a temporary file is
created in it, filled from the stored copy while hashing, checked against
the manifest's checksum, synced, and renamed over the target within that
same directory. A directory swapped for a symlink after the plan makes
the write fail; it cannot lead it elsewhere. Files whose content is
already the backup's are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import secrets
import stat as statmod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Final

from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.backup_store import (
    CHUNK,
    BackupStore,
    DamagedBackup,
    Manifest,
    ManifestEntry,
)
from cluso_router.workspace.files import TEMP_SUFFIX
from cluso_router.workspace.ledger import FileEvent
from cluso_router.workspace.paths import PathRefused, Workspace

_DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK: Final = _read_umask()

Announce = Callable[[str, FileEvent], None]
"""Called, in the worker thread, right after each change is made."""


class RestoreRefused(ProcedureError):
    def __init__(self, why: str) -> None:
        super().__init__(f"Restore refused: {why}", "restore_refused")


@dataclass(frozen=True)
class Placement:
    """
    One file of the backup and the root-relative, symlink-free path it
    goes to.
    """

    entry: ManifestEntry
    relative: str


@dataclass(frozen=True)
class Seen:
    """
    What the automatic snapshot before the restore saw of a file: its
    checksum, size and modification time.
    """

    sha256: str
    size: int
    mtime_ns: int


@dataclass
class Outcome:
    """
    What a restore did, in order; kept when it fails half-way, so what
    was done is still announced.
    """

    changed: list[tuple[str, FileEvent]] = field(default_factory=list)
    unchanged: int = 0


def plan(workspace: Workspace, manifest: Manifest) -> list[Placement]:
    """
    Where each file of C{manifest} goes.

    @raise RestoreRefused: for the first path that may not be written.
    """
    placements = []
    taken: set[str] = set()
    for entry in manifest.entries:
        try:
            target = workspace.resolve(entry.path, follow=False)
        except PathRefused as e:
            raise RestoreRefused(e.message) from None
        if target.is_root:
            raise RestoreRefused(f"{entry.path} names the root")
        if os.path.islink(target.path):
            raise RestoreRefused(f"{entry.path} is a symbolic link now; move it away first")
        if os.path.isdir(target.path):
            raise RestoreRefused(f"{entry.path} is a directory now; move it away first")
        _check_parents(workspace, target.path, entry.path)
        if target.relative in taken:
            raise RestoreRefused(f"two files of the backup would be written to {target.relative}")
        taken.add(target.relative)
        placements.append(Placement(entry, target.relative))
    return placements


def _check_parents(workspace: Workspace, path: str, given: str) -> None:
    parent = os.path.dirname(path)
    while parent != workspace.root and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        blocker = workspace.relative(parent)
        raise RestoreRefused(f"{given} needs the directory {blocker}, which is a file now")


def write(
    workspace: Workspace,
    store: BackupStore,
    manifest: Manifest,
    placements: Iterable[Placement],
    seen: Mapping[str, Seen],
    prune: Iterable[str],
    outcome: Outcome,
    announce: Announce,
    progress: Callable[[int, int], None],
) -> None:
    """
    Put every placement in place, then delete the C{prune} paths; record
    each change in C{outcome} and C{announce} it.

    @param seen: what the automatic snapshot saw; a file it saw with the
        backup's checksum, unchanged since, is not rewritten.
    """
    dirs = _RootDirectories(workspace.root)
    try:
        size = 0
        for done, placement in enumerate(placements, 1):
            event = _put(dirs, store, manifest, placement, seen, outcome, announce)
            if event is None:
                outcome.unchanged += 1
            else:
                outcome.changed.append((placement.relative, event))
                announce(placement.relative, event)
            size += placement.entry.size
            progress(done, size)
        for relative in prune:
            if _remove(dirs, relative):
                outcome.changed.append((relative, "unlink"))
                announce(relative, "unlink")
    finally:
        dirs.close()


def _unchanged(dirs: _RootDirectories, placement: Placement, seen: Mapping[str, Seen]) -> bool:
    before = seen.get(placement.relative)
    if before is None or before.sha256 != placement.entry.sha256:
        return False
    directory, name = posixpath.split(placement.relative)
    fd = dirs.open(directory, create=False)
    if fd is None:
        return False
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return (
        statmod.S_ISREG(st.st_mode)
        and st.st_size == before.size
        and st.st_mtime_ns == before.mtime_ns
        and bool(st.st_mode & 0o111) == placement.entry.executable
    )


def _put(
    dirs: _RootDirectories,
    store: BackupStore,
    manifest: Manifest,
    placement: Placement,
    seen: Mapping[str, Seen],
    outcome: Outcome,
    announce: Announce,
) -> FileEvent | None:
    if _unchanged(dirs, placement, seen):
        return None
    entry = placement.entry
    directory, name = posixpath.split(placement.relative)
    made: list[str] = []
    fd = dirs.open(directory, create=True, made=made)
    assert fd is not None
    for created in made:
        outcome.changed.append((created, "addDir"))
        announce(created, "addDir")
    try:
        try:
            current = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and not statmod.S_ISREG(current.st_mode):
            raise RestoreRefused(f"{placement.relative} stopped being a regular file")
        mode = _mode(current, entry.executable)
        temp = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        out = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=fd,
        )
        try:
            with os.fdopen(out, "wb") as f:
                _fill(f, store.stored_file(manifest.id, entry.path), manifest.id, entry)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=fd)
            raise
    finally:
        os.close(fd)
    return "add" if current is None else "change"


def _mode(current: os.stat_result | None, executable: bool) -> int:
    """
    The permission bits of a restored file: those it has now (new files:
    the umask's), with execute set where read is, or cleared, as the
    backup's file had.
    """
    mode = statmod.S_IMODE(current.st_mode) if current is not None else 0o666 & ~_UMASK
    if executable:
        return mode | ((mode & 0o444) >> 2)
    return mode & ~0o111


def _fill(out: IO[bytes], stored: str, backup_id: str, entry: ManifestEntry) -> None:
    """
    Copy the stored file into C{out}, checking it against the manifest on
    the way.
    """
    try:
        source = os.open(stored, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise DamagedBackup(backup_id, f"{entry.path} is missing") from None
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := os.read(source, CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    finally:
        os.close(source)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise DamagedBackup(backup_id, f"{entry.path} does not match its checksum")


def _remove(dirs: _RootDirectories, relative: str) -> bool:
    directory, name = posixpath.split(relative)
    fd = dirs.open(directory, create=False)
    if fd is None:
        return False
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not statmod.S_ISREG(st.st_mode):
            return False
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return True


class _RootDirectories:
    """
    Opens directories below the root by root-relative path, one component
    at a time, never following a symlink.
    """

    def __init__(self, root: str) -> None:
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._root)

    def open(self, relative: str, *, create: bool, made: list[str] | None = None) -> int | None:
        """
        A descriptor of directory C{relative} (C{""} for the root), making
        missing ones when C{create} (their paths go to C{made}); C{None}
        when one is missing and not C{create}.

        @raise OSError: when a component is a symlink or not a directory.
        """
        fd = os.dup(self._root)
        walked: list[str] = []
        try:
            for name in relative.split("/") if relative else ():
                walked.append(name)
                try:
                    child = os.open(name, _DIRECTORY_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(name, 0o777, dir_fd=fd)
                    if made is not None:
                        made.append("/".join(walked))
                    child = os.open(name, _DIRECTORY_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd
