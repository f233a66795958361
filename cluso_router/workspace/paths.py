"""
Path confinement: every path a client names is resolved against the
workspace root and refused unless it, and everything it resolves through,
stays inside the root.

The check is done once, here, for every operation on files and git paths,
so no operation can forget part of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

BLOCKED_NAMES: Final = frozenset(
    {".ssh", ".aws", ".gnupg", ".kube", ".docker", ".env", ".git", "node_modules"}
)

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
_MAX_DECODE_ROUNDS: Final = 4


class PathRefused(Exception):
    """
    A client's path names something outside the rules; C{message} says why
    in the original server's words where it had any.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def shown(value: str) -> str:
    """
    C{value} as it can be put in a message: lone surrogates (which no UTF-8
    encoder accepts) become C{\\udxxx} escapes.
    """
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def is_blocked(name: str) -> bool:
    """
    Whether a path component is one of the sensitive names, in any case
    (C{.GIT} reaches C{.git} on a case-insensitive filesystem).
    """
    return name.casefold() in BLOCKED_NAMES


def check_text(value: str, what: str = "path") -> None:
    """
    Refuse NUL and other control characters, and lone surrogates (text that
    is not Unicode cannot name a file or be passed to a child process).
    """
    if _CONTROL.search(value):
        raise PathRefused(f"Invalid {what}: contains a control character: {value!r}")
    if _SURROGATE.search(value):
        raise PathRefused(f"Invalid {what}: not valid Unicode: {shown(value)}")


#: What a bare git repository has at its top.
REPOSITORY_NAMES: Final = frozenset({"HEAD", "config", "objects", "refs"})


@dataclass(frozen=True)
class Target:
    """
    A path the rules allow.

    @ivar given: the path as the client sent it (for messages and echoes).
    @ivar path: the absolute path to operate on: every symlink resolved, or
        every one but the last component when the entry itself is meant.
    @ivar relative: C{path} relative to the root with C{/} separators; C{.}
        for the root itself.
    """

    given: str
    path: str
    relative: str

    @property
    def is_root(self) -> bool:
        return self.relative == "."


class Workspace:
    """
    The directory clients may reach, and the rules for reaching it.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"workspace root is not a directory: {root}")

    def contains(self, real: str) -> bool:
        """
        Whether the absolute, already resolved C{real} is the root or below it.
        """
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def relative(self, real: str) -> str:
        if real == self.root:
            return "."
        return os.path.relpath(real, self.root).replace(os.sep, "/")

    def resolve(self, given: str, *, follow: bool = True) -> Target:
        """
        Resolve C{given} (relative to the root, or absolute inside it).

        The path is used exactly as given (already decoded once, by the JSON
        parser). It is refused when any reading of it leaves the root or
        names a blocked directory: as given, with C{\\} read as a separator,
        and percent-decoded once or repeatedly, since some client or proxy
        on the way may decode it that way. Then its real path, with every
        symlink resolved, must stay inside the root. With C{follow} false
        the target is the last component itself (to delete or rename a
        link, not what it points to); it is refused all the same when it
        is a link leading outside.

        @raise PathRefused: with the reason.
        """
        if not isinstance(given, str):
            raise PathRefused("path must be a string")
        check_text(given)
        for reading in _readings(given):
            check_text(reading)
            lexical = os.path.normpath(os.path.join(self.root, reading or "."))
            if not self.contains(lexical):
                raise PathRefused(f"Path traversal detected: {given}")
            self._check_blocked(lexical)

        lexical = os.path.normpath(os.path.join(self.root, given or "."))
        real = os.path.realpath(lexical)
        if not self.contains(real):
            raise PathRefused(f"Path leaves the workspace through a symlink: {given}")
        self._check_blocked(real)
        if follow or lexical == self.root:
            return Target(given, real, self.relative(real))
        parent, name = os.path.split(lexical)
        entry = os.path.join(os.path.realpath(parent), name)
        self._check_blocked(entry)
        return Target(given, entry, self.relative(entry))

    def writable(self, target: Target) -> Target:
        """
        C{target}, if clients may create or replace it: not a name that
        would make the root look like a bare git repository (C{HEAD},
        C{config}, C{objects}, C{refs} at the top of a root without a
        C{.git} of its own), so no write can change which repository git
        sees, or what its configuration runs.

        @raise PathRefused: with the reason.
        """
        first = target.relative.split("/", 1)[0]
        if first in REPOSITORY_NAMES and not os.path.lexists(os.path.join(self.root, ".git")):
            raise PathRefused(
                f"Refused to write {first} at the root: with it the root could look like a "
                "git repository"
            )
        return target

    def _check_blocked(self, absolute: str) -> None:
        for part in self.relative(absolute).split("/"):
            if is_blocked(part):
                raise PathRefused(f"Access to sensitive directory blocked: {part}")


def _readings(given: str) -> Iterator[str]:
    seen: set[str] = set()
    decoded = given
    for _ in range(_MAX_DECODE_ROUNDS + 1):
        for reading in (decoded, decoded.replace("\\", "/")):
            if reading not in seen:
                seen.add(reading)
                yield reading
        next_round = unquote(decoded)
        if next_round == decoded:
            return
        decoded = next_round
