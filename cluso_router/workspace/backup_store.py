"""
Where backups live and what they hold.

Layout, under the backup directory (C{--backup-dir}, by default
C{$XDG_DATA_HOME/cluso-router/backups}, else C{~/.local/share/...})::

    <project key>/<id>/manifest.json
    <project key>/<id>/files/<root-relative path>

The project key is the root's name and a hash of its real path, so two
projects never share backups and the owner can tell them apart. A snapshot
is assembled in C{.<id>.partial} and renamed to C{<id>} once its manifest
is on disk; a deletion first renames to C{.<id>.deleting}; a listing
therefore sees whole backups only. Directories are private (0700).

Files are stored as independent copies, never hard links: a hard link
shares the inode, so an editor that rewrites the project file in place
(most do: truncate, then write) would change the backup with it, and a
backup that changes is no backup. Where the filesystem can (Btrfs, XFS,
bcachefs) the copy is a copy-on-write clone (the C{FICLONE} ioctl): no
data is duplicated until one side changes, and changing one side never
changes the other. Elsewhere it is a plain copy. Either way the checksum
is taken from the stored copy itself, so the manifest describes exactly
what the backup holds.

Everything here blocks; the operations layer runs it in worker threads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import stat as statmod
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.logger import Logger

from cluso_router._json import JSONError, dumps, loads
from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.backup_walk import Budget, Candidate, left_out
from cluso_router.workspace.paths import PathRefused, check_text

BACKUP_ID: Final = re.compile(r"^\d{14}-[a-z0-9]{6}$")
MANIFEST_NAME: Final = "manifest.json"
FILES_DIR: Final = "files"
FORMAT: Final = 1
MAX_DESCRIPTION: Final = 500
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024
CHUNK: Final = 1 << 20
_ID_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")

if sys.platform.startswith("linux"):
    import fcntl

    #: C{_IOW(0x94, 9, int)}: clone a whole file, sharing its extents.
    FICLONE: int | None = getattr(fcntl, "FICLONE", 0x40049409)
else:
    FICLONE = None

log = Logger()

Progress = Callable[[int, int], None]
"""Called with the files and bytes done so far."""


class BackupNotFound(ProcedureError):
    def __init__(self, backup_id: str) -> None:
        super().__init__(f"Backup not found: {backup_id}", "backup_not_found")


class DamagedBackup(ProcedureError):
    """
    A backup whose manifest or files are not what they should be: nothing
    is restored from it.
    """

    def __init__(self, backup_id: str, why: str) -> None:
        super().__init__(f"Backup {backup_id} is damaged: {why}", "backup_damaged")


def default_backup_dir(environ: Mapping[str, str] = os.environ) -> str:
    """
    C{$XDG_DATA_HOME/cluso-router/backups}; C{~/.local/share} when
    C{XDG_DATA_HOME} is unset or not absolute (as the XDG spec says).
    """
    data_home = environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):
        data_home = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "cluso-router", "backups")


def project_key(root: str) -> str:
    """
    The directory name of a root's backups: its name, readable, and a hash
    of its whole path, unique.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(root)).strip("._")[:40]
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    return f"{name or 'root'}-{digest}"


def new_backup_id(created: float) -> str:
    """
    The original's id form: 14 UTC digits C{YYYYMMDDHHMMSS}, C{-}, 6
    random C{[a-z0-9]}.
    """
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(created))
    return f"{stamp}-{''.join(secrets.choice(_ID_ALPHABET) for _ in range(6))}"


def manifest_path_problem(path: Any) -> str | None:
    """
    Why C{path} cannot name a file of a backup, or C{None}: it must be a
    normalised root-relative C{/}-separated path of names a snapshot may
    hold.
    """
    if not isinstance(path, str) or not path:
        return "names a file path that is not a non-empty string"
    try:
        check_text(path)
    except PathRefused:
        return f"names an unusable path: {path!r}"
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return f"names an absolute path: {path}"
    segments = path.replace("\\", "/").split("/")
    if ".." in segments:
        return f"names a path outside the root: {path}"
    if "" in segments or "." in segments:
        return f"names a path that is not normalised: {path}"
    if any(left_out(segment) for segment in segments):
        return f"names a path a backup never holds: {path}"
    return None


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str
    executable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "executable": self.executable,
        }


@dataclass(frozen=True)
class Manifest:
    """
    What one backup holds; its C{manifest.json}.
    """

    id: str
    description: str
    created_at: str
    project: str
    automatic: bool
    entries: tuple[ManifestEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def paths(self) -> list[str]:
        return [entry.path for entry in self.entries]

    def entry(self, path: str) -> ManifestEntry | None:
        for entry in self.entries:
            if entry.path == path:
                return entry
        return None

    def summary(self) -> dict[str, Any]:
        """
        The original's backup object C{{id, description, createdAt, files}},
        with the total size and whether the server took it by itself.
        """
        return {
            "id": self.id,
            "description": self.description,
            "createdAt": self.created_at,
            "files": self.paths,
            "totalBytes": self.total_bytes,
            "automatic": self.automatic,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "description": self.description,
            "createdAt": self.created_at,
            "project": self.project,
            "automatic": self.automatic,
            "totalBytes": self.total_bytes,
            "files": [entry.to_json() for entry in self.entries],
        }

    @classmethod
    def from_json(cls, backup_id: str, data: Any) -> Manifest:
        """
        The manifest of backup C{backup_id} from its parsed JSON.

        @raise DamagedBackup: for anything but a manifest this module
            would write for that id; a path leading out of the root or
            naming a secret is refused here, before anything is written.
        """

        def damaged(why: str) -> DamagedBackup:
            return DamagedBackup(backup_id, f"its manifest {why}")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise damaged(f"is not a format {FORMAT} manifest")
        if data.get("id") != backup_id:
            raise damaged("names another backup")
        description, created_at = data.get("description"), data.get("createdAt")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise damaged("has no valid description")
        if not isinstance(created_at, str):
            raise damaged("has no creation time")
        files = data.get("files")
        if not isinstance(files, list):
            raise damaged("has no file list")
        entries = []
        seen: set[str] = set()
        for item in files:
            if not isinstance(item, dict):
                raise damaged("has a file entry that is not an object")
            path = item.get("path")
            problem = manifest_path_problem(path)
            if problem is not None:
                raise damaged(problem)
            assert isinstance(path, str)
            if path in seen:
                raise damaged(f"names a file twice: {path}")
            seen.add(path)
            size, digest = item.get("size"), item.get("sha256")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise damaged(f"has no valid size for {path}")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise damaged(f"has no valid checksum for {path}")
            entries.append(ManifestEntry(path, size, digest, item.get("executable") is True))
        return cls(
            backup_id,
            description,
            created_at,
            str(data.get("project", "")),
            data.get("automatic") is True,
            tuple(entries),
        )


class BackupStore:
    """
    The backups of one root, under C{base}.

    Listing keeps the manifests it parsed, by id and the identity of the
    file (inode, size, time), so listing many large backups parses each
    manifest once, and a manifest changed on disk is read again; restores
    and reads always read it again.
    """

    def __init__(self, base: str, root: str) -> None:
        self.base = os.path.abspath(base)
        self.root = root
        self.directory = os.path.join(self.base, project_key(root))
        self._listed: dict[str, tuple[tuple[int, int, int], Manifest]] = {}

    def path_of(self, backup_id: str) -> str:
        return os.path.join(self.directory, backup_id)

    def stored_file(self, backup_id: str, relative: str) -> str:
        return os.path.join(self.directory, backup_id, FILES_DIR, *relative.split("/"))

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [
            name
            for name in names
            if BACKUP_ID.match(name) and os.path.isdir(os.path.join(self.directory, name))
        ]

    def load(self, backup_id: str) -> Manifest:
        """
        @raise BackupNotFound: when there is no such backup.
        @raise DamagedBackup: when its manifest is unreadable or invalid.
        """
        path = os.path.join(self.path_of(backup_id), MANIFEST_NAME)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            if os.path.isdir(self.path_of(backup_id)):
                raise DamagedBackup(backup_id, "its manifest is missing") from None
            raise BackupNotFound(backup_id) from None
        if len(raw) > MAX_MANIFEST_BYTES:
            raise DamagedBackup(backup_id, "its manifest is too large")
        try:
            data = loads(raw)
        except JSONError as e:
            raise DamagedBackup(backup_id, f"its manifest is not JSON: {e}") from None
        return Manifest.from_json(backup_id, data)

    def manifests(self) -> list[Manifest]:
        """
        Every readable backup, newest first; a damaged one is logged and
        left out.
        """
        found = []
        listed = {}
        for backup_id in self.ids():
            try:
                st = os.stat(os.path.join(self.path_of(backup_id), MANIFEST_NAME))
                identity = (st.st_ino, st.st_size, st.st_mtime_ns)
                cached = self._listed.get(backup_id)
                if cached is not None and cached[0] == identity:
                    manifest = cached[1]
                else:
                    manifest = self.load(backup_id)
            except (OSError, ProcedureError) as e:
                why = e.message if isinstance(e, ProcedureError) else str(e)
                log.warn("Backup {id} left out of the list: {why}", id=backup_id, why=why)
                continue
            listed[backup_id] = (identity, manifest)
            found.append(manifest)
        self._listed = listed
        return sorted(found, key=lambda m: (m.created_at, m.id), reverse=True)

    def snapshot(
        self,
        backup_id: str,
        description: str,
        created_at: str,
        automatic: bool,
        candidates: Iterable[Candidate],
        budget: Budget,
        progress: Progress,
    ) -> Manifest:
        """
        Copy C{candidates} into a new backup and write its manifest.

        A file that vanished since the walk is left out; one that grew past
        the budget meanwhile fails the snapshot. Nothing of a failed
        snapshot stays behind. Each copy is synced to disk, then the
        manifest, before the backup is renamed into place, so a backup
        that is listed survives a crash (a restore relies on its undo).
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        partial = os.path.join(self.directory, f".{backup_id}.partial")
        os.mkdir(partial, 0o700)
        try:
            files_dir = os.path.join(partial, FILES_DIR)
            os.mkdir(files_dir, 0o700)
            entries: list[ManifestEntry] = []
            size = 0
            for candidate in candidates:
                entry = _take(candidate, files_dir)
                if entry is None:
                    continue
                entries.append(entry)
                size += entry.size
                budget.check(len(entries), size)
                progress(len(entries), size)
            manifest = Manifest(
                backup_id,
                description,
                created_at,
                self.root,
                automatic,
                tuple(sorted(entries, key=lambda e: e.path)),
            )
            _write_durably(os.path.join(partial, MANIFEST_NAME), dumps(manifest.to_json()))
            os.rename(partial, self.path_of(backup_id))
            _sync_directory(self.directory)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return manifest

    def _open_stored(self, manifest: Manifest, entry: ManifestEntry) -> int:
        try:
            return os.open(
                self.stored_file(manifest.id, entry.path),
                os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
            )
        except OSError:
            raise DamagedBackup(manifest.id, f"{entry.path} is missing") from None

    def read_verified(self, manifest: Manifest, entry: ManifestEntry) -> bytes:
        """
        The bytes stored for C{entry}, checked against its size and checksum.

        @raise DamagedBackup: when they differ or the file is missing.
        """
        with os.fdopen(self._open_stored(manifest, entry), "rb") as f:
            data = f.read(entry.size + 1)
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise DamagedBackup(manifest.id, f"{entry.path} does not match its checksum")
        return data

    def verify(self, manifest: Manifest, progress: Progress) -> None:
        """
        Check every stored file against the manifest before anything is
        restored from it.

        @raise DamagedBackup: at the first file that differs or is missing.
        """
        size = 0
        for done, entry in enumerate(manifest.entries, 1):
            with os.fdopen(self._open_stored(manifest, entry), "rb") as f:
                digest, stored = _hash(f)
            if stored != entry.size or digest != entry.sha256:
                raise DamagedBackup(manifest.id, f"{entry.path} does not match its checksum")
            size += stored
            progress(done, size)

    def delete(self, backup_id: str) -> None:
        """
        @raise BackupNotFound: when there is no such backup.
        """
        doomed = os.path.join(self.directory, f".{backup_id}.deleting")
        try:
            os.rename(self.path_of(backup_id), doomed)
        except FileNotFoundError:
            raise BackupNotFound(backup_id) from None
        shutil.rmtree(doomed)

    def remove_leftovers(self) -> None:
        """
        Remove what interrupted snapshots and deletions left behind.
        """
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") and name.endswith((".partial", ".deleting")):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)


def _hash(f: Any) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _clone(source: int, dest: int) -> bool:
    """
    Make C{dest} a copy-on-write clone of C{source}; C{False} when the
    filesystem cannot (then nothing was written).
    """
    if FICLONE is None:
        return False
    try:
        fcntl.ioctl(dest, FICLONE, source)
    except OSError:
        return False
    return True


def _opened_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _take(candidate: Candidate, files_dir: str) -> ManifestEntry | None:
    """
    Store one file: opened without following a symlink, checked to be the
    very file the walk saw (no directory on the way swapped for a link),
    cloned or copied, then hashed from the copy. C{None} when it is gone
    or no longer a regular file.
    """
    try:
        source = os.open(candidate.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None
        raise
    try:
        st = os.fstat(source)
        if not statmod.S_ISREG(st.st_mode):
            return None
        opened = _opened_path(source)
        if opened is not None and opened != candidate.path:
            raise ProcedureError(
                f"{candidate.relative} was moved while it was being backed up; try again",
                "backup_failed",
            )
        dest_path = os.path.join(files_dir, *candidate.relative.split("/"))
        os.makedirs(os.path.dirname(dest_path), mode=0o700, exist_ok=True)
        dest = os.open(dest_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(dest, "r+b") as out:
            if _clone(source, dest):
                out.seek(0)
                digest, size = _hash(out)
            else:
                digest, size = _copy(source, out)
            out.flush()
            os.fsync(dest)
    finally:
        os.close(source)
    return ManifestEntry(candidate.relative, size, digest, bool(st.st_mode & 0o111))


def _copy(source: int, out: Any) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := os.read(source, CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _write_durably(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
