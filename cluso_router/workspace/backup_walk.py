"""
Which files a backup snapshot takes: every regular file under the root
that git would not ignore, that is not secret, and that fits the budget.

Left out, always: the blocked names of L{cluso_router.workspace.paths}
(C{.git}, C{node_modules}, C{.ssh}, ...), anything named C{.env*} in any
case (secrets are not copied to another directory), C{__pycache__},
C{.DS_Store}, virtualenvs (directories holding C{pyvenv.cfg}), the
temporary files of atomic writes, names the API cannot carry (control
characters, bytes that are not UTF-8), symlinks (never followed, never
stored) and special files. Then what the ignore rules say, as git reads them:
C{.git/info/exclude}, the root's C{.gitignore} and one in any directory
below (a deeper file overrides a shallower one; an ignored directory is
not entered, so nothing below it can be re-included), and the server's
C{--ignore} patterns, which nothing overrides. Directories are not
recorded; a snapshot is its files.

The walk runs in a worker thread and stops as soon as the budget is
exceeded, so a root far too large is refused quickly.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from cluso_router.workspace.files import TEMP_SUFFIX
from cluso_router.workspace.paths import PathRefused, check_text, is_blocked

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

SKIPPED_NAMES: Final = frozenset({"__pycache__", ".ds_store"})
VIRTUALENV_MARKER: Final = "pyvenv.cfg"

DEFAULT_MAX_FILES: Final = 10_000
DEFAULT_MAX_BYTES: Final = 512 * 1024 * 1024


class BudgetExceeded(Exception):
    """
    A snapshot would hold more files or bytes than its budget allows;
    C{message} says which, and how to fix it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Budget:
    """
    The most one snapshot may hold.
    """

    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.max_files < 1:
            raise ValueError("the backup file budget must be at least 1 file")
        if self.max_bytes < 1:
            raise ValueError("the backup size budget must be at least 1 byte")

    def check(self, files: int, size: int) -> None:
        """
        @raise BudgetExceeded: when C{files} files of C{size} bytes in all
            are more than the budget.
        """
        if files > self.max_files:
            raise BudgetExceeded(
                f"Backup refused: the project has more than {self.max_files} files to back up "
                f"(the budget set by --backup-max-files); add generated files to .gitignore "
                "or raise the budget"
            )
        if size > self.max_bytes:
            raise BudgetExceeded(
                f"Backup refused: the project has more than {_size(self.max_bytes)} to back "
                f"up (the budget of {self.max_bytes} bytes set by --backup-max-bytes); add "
                "generated files to .gitignore or raise the budget"
            )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def is_secret(name: str) -> bool:
    """
    Whether C{name} is a dotenv file (C{.env}, C{.env.local}, C{.ENVRC}):
    never copied into a backup.
    """
    return name.casefold().startswith(".env")


def left_out(name: str) -> bool:
    """
    Whether a path component named C{name} never enters a backup, whatever
    the ignore rules say; names the API cannot carry (control characters,
    bytes that are not UTF-8) are left out too.
    """
    if (
        is_blocked(name)
        or is_secret(name)
        or name.casefold() in SKIPPED_NAMES
        or name.endswith(TEMP_SUFFIX)
    ):
        return True
    try:
        check_text(name)
    except PathRefused:
        return True
    return False


@dataclass(frozen=True)
class Candidate:
    """
    A file the walk chose: root-relative C{/}-separated path, absolute
    path, and what C{lstat} said when it was seen.
    """

    relative: str
    path: str
    size: int
    mtime_ns: int


_Rules: TypeAlias = "tuple[tuple[str, GitIgnoreSpec], ...]"


def _spec(lines: Iterable[str]) -> GitIgnoreSpec:
    """
    Git's ignore rules from C{lines}; pathspec is imported here, when a
    snapshot is taken, so importing the server (plugins do) stays light.
    """
    from pathspec import GitIgnoreSpec

    return GitIgnoreSpec.from_lines(list(lines))


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


class SnapshotWalk:
    """
    The files of one root a snapshot takes, in sorted path order.

    @param extra: the server's C{--ignore} patterns.
    @param skip: absolute real paths of directories never entered (the
        backup storage, when it lies under the root).
    """

    def __init__(self, root: str, extra: Iterable[str] = (), skip: Iterable[str] = ()) -> None:
        self.root = root
        self._extra = _spec(extra)
        self._skip = frozenset(skip)

    def files(self, budget: Budget, also: Iterable[str] = ()) -> list[Candidate]:
        """
        Every file the snapshot takes; with C{also}, the regular files at
        those root-relative, symlink-free paths too, ignored or not (a
        restore saves every file it is about to replace).

        @raise BudgetExceeded: as soon as they are more than C{budget}.
        """
        chosen: list[Candidate] = []
        size = 0
        for candidate in self._walk():
            chosen.append(candidate)
            size += candidate.size
            budget.check(len(chosen), size)
        taken = {c.relative for c in chosen}
        for relative in also:
            if relative in taken:
                continue
            path = os.path.join(self.root, *relative.split("/"))
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if statmod.S_ISREG(st.st_mode):
                taken.add(relative)
                chosen.append(Candidate(relative, path, st.st_size, st.st_mtime_ns))
                size += st.st_size
                budget.check(len(chosen), size)
        return chosen

    def _base_rules(self) -> _Rules:
        lines = _read_lines(os.path.join(self.root, ".git", "info", "exclude"))
        return (("", _spec(lines)),) if lines else ()

    def _walk(self) -> Iterator[Candidate]:
        pending: list[tuple[str, str, _Rules]] = [(self.root, "", self._base_rules())]
        while pending:
            directory, prefix, rules = pending.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            if any(e.name == ".gitignore" for e in entries):
                lines = _read_lines(os.path.join(directory, ".gitignore"))
                if lines:
                    rules = (*rules, (prefix, _spec(lines)))
            subdirectories = []
            for entry in entries:
                if left_out(entry.name):
                    continue
                relative = prefix + entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if statmod.S_ISDIR(st.st_mode):
                    if entry.path in self._skip or self._ignored(rules, relative, True):
                        continue
                    if os.path.isfile(os.path.join(entry.path, VIRTUALENV_MARKER)):
                        continue
                    subdirectories.append((entry.path, relative + "/", rules))
                elif statmod.S_ISREG(st.st_mode) and not self._ignored(rules, relative, False):
                    yield Candidate(relative, entry.path, st.st_size, st.st_mtime_ns)
            pending.extend(reversed(subdirectories))

    def _ignored(self, rules: _Rules, relative: str, is_dir: bool) -> bool:
        suffix = "/" if is_dir else ""
        if self._extra.match_file(relative + suffix):
            return True
        for prefix, spec in reversed(rules):
            decided = spec.check_file(relative[len(prefix) :] + suffix).include
            if decided is not None:
                return decided
        return False
