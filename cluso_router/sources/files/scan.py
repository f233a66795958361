"""
Reading the state of the tree: one entry per path, so that what changed
in a burst of events is found by comparing before and after.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from cluso_router.sources.files.ignore import VIRTUALENV_MARKER, IgnoreRules

#: C{(is_dir, mtime_ns, size, inode)}: enough to tell a rewrite or a
#: replacement from an untouched file.
Stat = tuple[bool, int, int, int]


def stat_path(path: str) -> Stat | None:
    """
    The entry of C{path} (not following a symlink), or C{None} if it is gone.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return _entry(st)


def _entry(st: os.stat_result) -> Stat:
    return (stat.S_ISDIR(st.st_mode), st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class Snapshot:
    """
    Entries under one directory, by root-relative path, and the
    virtualenvs found (and left out) on the way.
    """

    entries: dict[str, Stat] = field(default_factory=dict)
    virtualenvs: set[str] = field(default_factory=set)

    def update(self, other: Snapshot) -> None:
        self.entries.update(other.entries)
        self.virtualenvs |= other.virtualenvs


def scan(root: str, rules: IgnoreRules, under: str = "", recursive: bool = True) -> Snapshot:
    """
    Every entry below C{under} (root-relative, C{""} for the root itself)
    that C{rules} keep; directories that vanish or cannot be read are skipped.
    """
    snapshot = Snapshot()
    pending = [under]
    while pending:
        directory = pending.pop()
        prefix = directory + "/" if directory else ""
        try:
            with os.scandir(os.path.join(root, directory)) as entries:
                found = list(entries)
        except OSError:
            continue
        for entry in found:
            path, full = prefix + entry.name, entry.path
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if is_dir and os.path.exists(os.path.join(full, VIRTUALENV_MARKER)):
                snapshot.virtualenvs.add(path)
                continue
            if rules.ignored(path, is_dir):
                continue
            snapshot.entries[path] = _entry(st)
            if is_dir and recursive:
                pending.append(path)
    return snapshot
