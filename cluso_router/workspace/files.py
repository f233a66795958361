"""
File operations on the workspace, for every transport.

Each public method takes the raw JSON values a client sent (so it checks
their types itself), returns the original server's C{data} shape, and raises
L{ProcedureError} with the original's error text for expected failures.
Every path goes through L{Workspace.resolve}. Every change is announced once
through the L{FileChangeLedger}.

Content, directory walks and recursive deletes run in the reactor's thread
pool, so a large file or tree does not stall other clients; metadata calls
(stat, mkdir, rename, unlink) are quick and run on the reactor thread.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat as statmod
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from cluso_router._reactor import default_reactor
from cluso_router._time import iso_timestamp
from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.glob import WalkBudget, expand_braces, glob_paths, relative_pattern
from cluso_router.workspace.ledger import FileChangeLedger, FileEvent
from cluso_router.workspace.paths import (
    PathRefused,
    Target,
    Workspace,
    check_text,
    is_blocked,
    shown,
)

TEMP_SUFFIX: Final = ".cluso-tmp"
"""Suffix of the temporary files behind atomic writes; watchers ignore them."""

DEFAULT_TREE_DEPTH: Final = 10
DEFAULT_TREE_IGNORE: Final = (".git", "node_modules", ".next", "dist")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK: Final = _read_umask()

Runner = Callable[..., "Deferred[Any]"]


class FileOperations:
    """
    The C{files} operations of one workspace.

    @param run_blocking: runs a blocking callable with arguments and returns
        a L{Deferred} of its result; the reactor's thread pool by default.
    """

    def __init__(
        self,
        workspace: Workspace,
        changes: FileChangeLedger | None = None,
        reactor: Any = None,
        run_blocking: Runner | None = None,
    ) -> None:
        self.workspace = workspace
        self._changes = changes
        if run_blocking is None:
            reactor = reactor if reactor is not None else default_reactor()
            run_blocking = partial(_in_thread, reactor)
        self._run = run_blocking
        self._walks: set[WalkBudget] = set()

    def _walk(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run a budgeted walk (its L{WalkBudget} is the last argument) in the
        thread pool; cancelling the answer, or L{cancel_walks}, stops it
        within one directory entry.
        """
        budget: WalkBudget = args[-1]
        self._walks.add(budget)
        answer: Deferred[Any] = Deferred(lambda _: budget.cancelled.set())

        def done(result: Any) -> None:
            self._walks.discard(budget)
            if not answer.called:
                answer.callback(result)

        self._run(f, *args).addBoth(done)
        return answer

    def cancel_walks(self) -> None:
        """
        Stop every walk under way (the server is stopping).
        """
        for budget in list(self._walks):
            budget.cancelled.set()

    def _announce(self, events: list[tuple[str, FileEvent]]) -> None:
        if self._changes is not None:
            for path, event in events:
                self._changes.changed(path, event)

    # reading

    async def read_file(self, path: Any = None) -> dict[str, Any]:
        given = _required(path, "path")
        with _failing("Failed to read file", "open", given):
            target = self.workspace.resolve(given)
            content: str = await self._run(_read_text, self.workspace, target.path)
        return {"path": given, "content": content, "encoding": "utf-8"}

    async def exists(self, path: Any = None) -> bool:
        given = _required(path, "path")
        try:
            target = self.workspace.resolve(given)
        except PathRefused:
            return False
        return os.path.exists(target.path)

    async def stat(self, path: Any = None) -> dict[str, Any]:
        given = _required(path, "path")
        with _failing("Failed to stat file", "stat", given):
            target = self.workspace.resolve(given)
            st = os.stat(target.path)
        birth = getattr(st, "st_birthtime", 0.0)
        return {
            "path": given,
            "isDirectory": statmod.S_ISDIR(st.st_mode),
            "isFile": statmod.S_ISREG(st.st_mode),
            "size": st.st_size,
            "created": iso_timestamp(birth),
            "modified": iso_timestamp(st.st_mtime),
            "accessed": iso_timestamp(st.st_atime),
            "mode": st.st_mode,
        }

    async def get_cwd(self) -> dict[str, str]:
        root = self.workspace.root
        return {"cwd": root, "name": os.path.basename(root) or root}

    async def list_directory(self, path: Any = None) -> list[dict[str, Any]]:
        given = _optional_str(path, "path", "Failed to list directory") or "."
        with _failing("Failed to list directory", "scandir", given):
            target = self.workspace.resolve(given)
            entries: list[dict[str, Any]] = await self._run(
                _list_entries, self.workspace, target.path, given
            )
        return entries

    async def get_tree(
        self, path: Any = None, max_depth: Any = None, ignore: Any = None
    ) -> dict[str, Any]:
        prefix = "Failed to get tree"
        given = _optional_str(path, "path", prefix) or "."
        depth = DEFAULT_TREE_DEPTH if max_depth is None else _depth(max_depth, prefix)
        ignored = DEFAULT_TREE_IGNORE if ignore is None else _names(ignore, "ignore", prefix)
        with _failing(prefix, "stat", given):
            target = self.workspace.resolve(given)
            walk = _TreeWalk(self.workspace, depth, frozenset(ignored))
            node: dict[str, Any] | None = await self._walk(walk.tree, target, WalkBudget())
        if node is None:
            raise ProcedureError(f"Failed to build tree for path: {shown(given)}")
        return node

    async def glob(self, pattern: Any = None, dir_path: Any = None) -> list[str]:
        prefix = "Failed to glob"
        given = _required(pattern, "pattern")
        base = _optional_str(dir_path, "dirPath", prefix) or "."
        with _failing(prefix, "scandir", base):
            check_text(given, "pattern")
            start = self.workspace.resolve(base)
            patterns = [relative_pattern(start, p) for p in expand_braces(given)]
            matches: list[str] = await self._walk(
                glob_paths, self.workspace, start, patterns, WalkBudget()
            )
        return matches

    # changing

    async def write_file(self, path: Any = None, content: Any = None) -> dict[str, Any]:
        prefix = "Failed to write file"
        given = _required(path, "path")
        if content is None:
            raise ProcedureError("Missing required field: content")
        text = _text(content, "content", prefix)
        with _failing(prefix, "open", given):
            target = _file_target(self.workspace.resolve(given))
            written: _Written = await self._run(_write_atomic, target.path, _utf8(text))
        self._announce(self._created(written.made_dirs))
        self._announce([(target.relative, "change" if written.existed else "add")])
        return {"path": given, "bytesWritten": written.size}

    async def create_file(self, path: Any = None, content: Any = "") -> dict[str, Any]:
        prefix = "Failed to create file"
        given = _required(path, "path")
        text = _text("" if content is None else content, "content", prefix)
        with _failing(prefix, "open", given):
            target = _file_target(self.workspace.resolve(given))
            try:
                written: _Written = await self._run(
                    _write_atomic, target.path, _utf8(text), exclusive=True
                )
            except FileExistsError:
                raise ProcedureError(f"File already exists: {given}") from None
        self._announce(self._created(written.made_dirs))
        self._announce([(target.relative, "add")])
        return {"path": given}

    async def delete_file(self, path: Any = None) -> dict[str, Any]:
        given = _required(path, "path")
        with _failing("Failed to delete file", "unlink", given):
            target = self.workspace.resolve(given, follow=False)
            if os.path.isdir(target.path) and not os.path.islink(target.path):
                raise ProcedureError(f"Cannot delete directory with deleteFile: {given}")
            os.unlink(target.path)
        self._announce([(target.relative, "unlink")])
        return {"path": given}

    async def rename_file(self, old_path: Any = None, new_path: Any = None) -> dict[str, Any]:
        old_given = _required(old_path, "oldPath")
        new_given = _required(new_path, "newPath")
        with _failing("Failed to rename file", "rename", old_given):
            source = self.workspace.resolve(old_given, follow=False)
            dest = self.workspace.resolve(new_given, follow=False)
            if source.is_root or dest.is_root:
                raise PathRefused("Cannot rename the workspace root")
            if not os.path.lexists(source.path):
                raise _missing()
            if os.path.lexists(dest.path):
                raise ProcedureError(f"Destination already exists: {new_given}")
            is_dir = os.path.isdir(source.path) and not os.path.islink(source.path)
            made = _make_parents(dest.path)
            os.rename(source.path, dest.path)
        self._announce([(source.relative, "unlinkDir" if is_dir else "unlink")])
        self._announce(self._created(made))
        self._announce([(dest.relative, "addDir" if is_dir else "add")])
        return {"oldPath": old_given, "newPath": new_given}

    async def copy_file(self, src_path: Any = None, dest_path: Any = None) -> dict[str, Any]:
        src_given = _required(src_path, "srcPath")
        dest_given = _required(dest_path, "destPath")
        with _failing("Failed to copy file", "copyfile", src_given):
            source = self.workspace.resolve(src_given)
            dest = _file_target(self.workspace.resolve(dest_given, follow=False))
            if os.path.isdir(source.path):
                raise ProcedureError(f"Cannot copy directory with copyFile: {src_given}")
            try:
                written: _Written = await self._run(_copy_exclusive, source.path, dest.path)
            except FileExistsError:
                raise ProcedureError(f"Destination already exists: {dest_given}") from None
        self._announce(self._created(written.made_dirs))
        self._announce([(dest.relative, "add")])
        return {"srcPath": src_given, "destPath": dest_given}

    async def create_directory(self, path: Any = None) -> dict[str, Any]:
        given = _required(path, "path")
        with _failing("Failed to create directory", "mkdir", given):
            target = self.workspace.resolve(given)
            made = _make_dirs(target.path)
        self._announce(self._created(made))
        return {"path": given}

    async def delete_directory(self, path: Any = None) -> dict[str, Any]:
        given = _required(path, "path")
        with _failing("Failed to delete directory", "rm", given):
            target = self.workspace.resolve(given, follow=False)
            if target.is_root:
                raise PathRefused(f"Cannot delete the workspace root: {given}")
            if not os.path.lexists(target.path):
                raise _missing()
            if os.path.isdir(target.path) and not os.path.islink(target.path):
                await self._walk(remove_tree, target.path, WalkBudget())
                event: FileEvent = "unlinkDir"
            else:
                os.unlink(target.path)
                event = "unlink"
        self._announce([(target.relative, event)])
        return {"path": given}

    def _created(self, directories: list[str]) -> list[tuple[str, FileEvent]]:
        return [(self.workspace.relative(d), "addDir") for d in directories]


def _in_thread(reactor: Any, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)


# argument checks


def _required(value: Any, name: str) -> str:
    """
    A required string field; like the original, an empty string counts as
    missing.
    """
    if value is None or value == "":
        raise ProcedureError(f"Missing required field: {name}")
    if not isinstance(value, str):
        raise ProcedureError(f"Invalid field: {name} must be a string")
    return value


def _optional_str(value: Any, name: str, prefix: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProcedureError(f"{prefix}: {name} must be a string")
    return value


def _text(value: Any, name: str, prefix: str) -> str:
    if not isinstance(value, str):
        raise ProcedureError(f"{prefix}: {name} must be a string")
    return value


def _depth(value: Any, prefix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ProcedureError(f"{prefix}: maxDepth must be a whole number")
    if value < 0:
        raise ProcedureError(f"{prefix}: maxDepth must not be negative")
    return int(value)


def _names(value: Any, name: str, prefix: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProcedureError(f"{prefix}: {name} must be a list of names")
    return value


def _utf8(text: str) -> bytes:
    """
    Encode like a JavaScript string written as UTF-8: a lone surrogate
    becomes U+FFFD instead of failing.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        repaired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return repaired.encode("utf-8")


@contextmanager
def _failing(prefix: str, syscall: str, given: str) -> Iterator[None]:
    """
    Turn refusals and OS errors into the original's prefixed messages, with
    the errno text in Node's form (C{ENOENT: no such file or directory,
    open 'x'}).
    """
    try:
        yield
    except PathRefused as e:
        raise ProcedureError(f"{prefix}: {e.message}") from None
    except OSError as e:
        raise ProcedureError(f"{prefix}: {_os_message(e, syscall, given)}") from None


def _os_message(error: OSError, syscall: str, given: str) -> str:
    code = errno.errorcode.get(error.errno or 0, "EIO")
    reason = (error.strerror or str(error)).lower()
    return f"{code}: {reason}, {syscall} '{shown(given)}'"


def _file_target(target: Target) -> Target:
    """
    Refuse a directory (the root above all) as the target of a file write,
    before a temporary file is made beside it.
    """
    if target.is_root or os.path.isdir(target.path):
        raise IsADirectoryError(errno.EISDIR, "illegal operation on a directory")
    return target


def _missing() -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))


# blocking work


@dataclass
class _Written:
    size: int = 0
    existed: bool = False
    made_dirs: list[str] = field(default_factory=list)


def _read_regular(workspace: Workspace, path: str) -> bytes:
    """
    The bytes of a regular file. Opening never blocks (a FIFO is refused,
    not waited on), and the opened file must still lie inside the
    workspace, so a symlink swapped in after the check reads nothing.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_opened(workspace, fd)
        mode = os.fstat(fd).st_mode
        if statmod.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "illegal operation on a directory")
        if not statmod.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _read_text(workspace: Workspace, path: str) -> str:
    return _read_regular(workspace, path).decode("utf-8", "replace")


def _check_opened(workspace: Workspace, fd: int) -> None:
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return
    if not workspace.contains(opened):
        raise PathRefused("Path leaves the workspace through a symlink")


def _make_dirs(path: str) -> list[str]:
    """
    C{mkdir -p}, returning the directories it created, outermost first.
    """
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    made = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
            made.append(directory)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
    return made


def _make_parents(path: str) -> list[str]:
    return _make_dirs(os.path.dirname(path))


def _temp_beside(path: str) -> tuple[int, str]:
    directory, name = os.path.split(path)
    return tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)


def _write_atomic(path: str, data: bytes, exclusive: bool = False) -> _Written:
    """
    Write C{data} to a temporary file beside C{path} and move it into place,
    so readers see the old or the new content, never a part. With
    C{exclusive}, a hard link puts it there only if nothing exists yet.
    """
    result = _Written(size=len(data), made_dirs=_make_parents(path))
    try:
        mode = statmod.S_IMODE(os.stat(path).st_mode)
        result.existed = True
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    fd, temp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if exclusive:
            os.link(temp, path)
        else:
            os.replace(temp, path)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    return result


def _copy_exclusive(source: str, dest: str) -> _Written:
    result = _Written(made_dirs=_make_parents(dest))
    fd, temp = _temp_beside(dest)
    os.close(fd)
    try:
        shutil.copyfile(source, temp)
        shutil.copymode(source, temp)
        os.link(temp, dest)
    finally:
        os.unlink(temp)
    result.size = os.path.getsize(dest)
    return result


def _entry_stat(workspace: Workspace, entry: os.DirEntry[str]) -> os.stat_result:
    """
    The entry's stat, following a symlink only when it stays inside the
    workspace (so a listing reveals nothing about files outside).
    """
    if entry.is_symlink() and not workspace.contains(os.path.realpath(entry.path)):
        return entry.stat(follow_symlinks=False)
    return entry.stat()


def _list_entries(workspace: Workspace, directory: str, given: str) -> list[dict[str, Any]]:
    entries = []
    with os.scandir(directory) as it:
        for entry in it:
            try:
                st = _entry_stat(workspace, entry)
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            entries.append(
                {
                    "name": entry.name,
                    "path": posixpath.normpath(posixpath.join(given, entry.name)),
                    "isDirectory": is_dir,
                    "size": st.st_size,
                    "modified": iso_timestamp(st.st_mtime),
                }
            )
    return entries


def _name_order(node: dict[str, Any]) -> tuple[bool, str, str]:
    return (not node["isDirectory"], node["name"].casefold(), node["name"])


def remove_tree(path: str, budget: WalkBudget) -> None:
    """
    Delete the directory C{path} and everything below it: a loop, not
    recursion (a chain deeper than Python's recursion limit goes too), and
    relative to open directory descriptors opened without following
    symlinks, so a directory swapped for a symlink mid-way cannot send it
    outside (as C{shutil.rmtree} guards against).
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

    def opened(fd: int) -> list[str]:
        """
        Unlink everything in C{fd} but directories; return their names.
        """
        with os.scandir(fd) as entries:
            listed = list(entries)
        budget.spend(len(listed) + 1)
        directories = []
        for entry in listed:
            if entry.is_dir(follow_symlinks=False):
                directories.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
        return directories

    # Each level: its descriptor, its name in the level above, and its
    # subdirectories still to delete.
    stack: list[tuple[int, str, list[str]]] = [(os.open(path, flags), "", [])]
    try:
        stack[0][2].extend(opened(stack[0][0]))
        while stack:
            fd, name, directories = stack[-1]
            if directories:
                child = directories.pop()
                stack.append((os.open(child, flags, dir_fd=fd), child, []))
                stack[-1][2].extend(opened(stack[-1][0]))
                continue
            stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    os.rmdir(path)


class _TreeWalk:
    """
    Builds a C{TreeNode}: dot names, ignored and blocked names skipped;
    symlinks followed only inside the workspace and never back into a
    directory being walked (no cycles). A loop, not recursion, so a deep
    chain of directories cannot overflow the stack; within a L{WalkBudget}.
    """

    def __init__(self, workspace: Workspace, max_depth: int, ignore: frozenset[str]) -> None:
        self.workspace = workspace
        self.max_depth = max_depth
        self.ignore = ignore

    def tree(self, target: Target, budget: WalkBudget) -> dict[str, Any] | None:
        name = os.path.basename(target.path) or target.path
        root = self._node(target.path, target.relative, name)
        if root is None:
            return None
        pending = [(root, target.path, 0, frozenset((target.path,)))]
        while pending:
            node, real, depth, ancestors = pending.pop()
            if not node["isDirectory"]:
                continue
            children: list[dict[str, Any]] = []
            if depth < self.max_depth:
                for child, child_real in self._children(real, node["path"], ancestors, budget):
                    children.append(child)
                    pending.append((child, child_real, depth + 1, ancestors | {child_real}))
            node["children"] = children
        _sort_children(root)
        return root

    @staticmethod
    def _node(real: str, relative: str, name: str) -> dict[str, Any] | None:
        try:
            st = os.stat(real)
        except OSError:
            return None
        return {
            "name": name,
            "path": relative,
            "isDirectory": statmod.S_ISDIR(st.st_mode),
            "size": st.st_size,
        }

    def _children(
        self, directory: str, relative: str, ancestors: frozenset[str], budget: WalkBudget
    ) -> list[tuple[dict[str, Any], str]]:
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            return []
        budget.spend(len(entries) + 1)
        children = []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in self.ignore or is_blocked(name):
                continue
            real = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
            if not self.workspace.contains(real) or real in ancestors:
                continue
            child_relative = name if relative == "." else f"{relative}/{name}"
            child = self._node(real, child_relative, name)
            if child is not None:
                children.append((child, real))
        return children


def _sort_children(root: dict[str, Any]) -> None:
    pending = [root]
    while pending:
        node = pending.pop()
        children = node.get("children")
        if children:
            children.sort(key=_name_order)
            pending.extend(children)
