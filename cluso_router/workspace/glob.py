"""
Globs, in one dialect for the whole workspace.

Brace alternatives (C{{a,b}}, nested, C{\\{} escaped) are written out by
L{expand_braces} for every use. Two matchers share them:

 - L{glob_paths}: the original server's C{/api/files/glob} (C{**} is zero or
   more directories, C{*}, C{?} and C{[...]} match within a name), walking
   the tree once per pattern in time linear in the directories visited, with
   a budget of entries and seconds and a cancel flag checked as it goes;
 - L{GlobFilter}: C{.gitignore}-style globs choosing files for searches and
   validators (C{*.py}, C{src/**/*.ts}, C{!*_test.go}). ripgrep's own
   C{--glob} would let a glob select files C{.gitignore} excludes; searches
   apply globs here instead, to the files listed with the ignore rules in
   force, so a glob only ever narrows a search.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from pathspec import GitIgnoreSpec

from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.paths import PathRefused, Target, Workspace, is_blocked

MAX_BRACE_EXPANSIONS: Final = 1024
#: Directory entries one glob request may look at, in all its patterns.
MAX_GLOB_ENTRIES: Final = 200_000
#: Seconds one glob request may walk.
MAX_GLOB_SECONDS: Final = 10.0


class GlobFilter:
    """
    Whether a C{/}-separated path is chosen by a list of globs: the last
    glob matching it decides (one starting with C{!} excludes); a path no
    glob matches is chosen only when every glob is an exclusion.
    """

    def __init__(self, globs: Iterable[str]) -> None:
        self._specs: list[tuple[bool, GitIgnoreSpec]] = []
        for glob in globs:
            exclude = glob.startswith("!")
            body = glob[1:] if exclude else glob
            self._specs.append((not exclude, GitIgnoreSpec.from_lines(expand_braces(body))))
        self._default = not any(include for include, _ in self._specs)

    def __bool__(self) -> bool:
        return bool(self._specs)

    def __call__(self, path: str) -> bool:
        chosen = self._default
        for include, spec in self._specs:
            if spec.match_file(path):
                chosen = include
        return chosen


def expand_braces(pattern: str, limit: int = MAX_BRACE_EXPANSIONS) -> list[str]:
    """
    Expand C{{a,b}} alternatives (nested, C{\\{} escaped) into whole
    patterns; a brace group without a comma is literal. Duplicates dropped.

    @raise ProcedureError: the pattern expands to more than C{limit}.
    """
    done: list[str] = []
    pending = [pattern]
    while pending:
        current = pending.pop()
        group = _find_brace_group(current)
        if group is None:
            if current not in done:
                done.append(current)
            continue
        start, end, alternatives = group
        for alternative in reversed(alternatives):
            pending.append(current[:start] + alternative + current[end + 1 :])
        if len(done) + len(pending) > limit:
            raise ProcedureError(
                f"Failed to glob: pattern expands to more than {limit} alternatives"
            )
    return done


def _unescaped(pattern: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """
    The characters of C{pattern} from C{start} on that no backslash escapes,
    with their index; an escaping backslash and what it escapes are skipped.
    """
    i = start
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        yield i, pattern[i]
        i += 1


def _find_brace_group(pattern: str) -> tuple[int, int, list[str]] | None:
    for i, char in _unescaped(pattern):
        if char == "{":
            group = _brace_group_at(pattern, i)
            if group is not None:
                return group
    return None


def _brace_group_at(pattern: str, start: int) -> tuple[int, int, list[str]] | None:
    depth = 0
    pieces: list[str] = []
    piece_start = start + 1
    for i, char in _unescaped(pattern, start):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                if not pieces:
                    return None
                pieces.append(pattern[piece_start:i])
                return start, i, pieces
        elif char == "," and depth == 1:
            pieces.append(pattern[piece_start:i])
            piece_start = i + 1
    return None


@dataclass(frozen=True)
class Pattern:
    """
    One brace-free glob, split into its C{/}-separated segments.
    """

    segments: tuple[str, ...]
    directories_only: bool


def relative_pattern(start: Target, pattern: str) -> Pattern:
    """
    Split one brace-free pattern into segments relative to C{start}; an
    absolute pattern must lie inside it and C{..} is refused.
    """
    if pattern.startswith("/"):
        base = start.path.rstrip("/") + "/"
        if not (pattern + "/").startswith(base):
            raise PathRefused(f"Path traversal detected: {pattern}")
        pattern = pattern[len(base) :]
    segments = tuple(s for s in pattern.split("/") if s not in ("", "."))
    if any(_unescape(s) == ".." for s in segments):
        raise PathRefused(f"Path traversal detected: {pattern}")
    return Pattern(segments, pattern.endswith("/"))


@dataclass(eq=False)
class WalkBudget:
    """
    What one request's walk may still spend, and a flag that stops it from
    another thread (the client went away, the server is stopping).
    """

    entries: int = MAX_GLOB_ENTRIES
    seconds: float = MAX_GLOB_SECONDS
    cancelled: threading.Event = field(default_factory=threading.Event)
    timer: Callable[[], float] = time.monotonic
    _deadline: float | None = None

    def spend(self, entries: int = 1) -> None:
        """
        Count C{entries} looked at.

        @raise ProcedureError: the walk is cancelled or over its budget.
        """
        if self._deadline is None:
            self._deadline = self.timer() + self.seconds
        self.entries -= entries
        if self.cancelled.is_set():
            raise ProcedureError("Failed to glob: cancelled", "cancelled")
        if self.entries < 0:
            raise ProcedureError(
                f"Failed to glob: the pattern looks at more than {MAX_GLOB_ENTRIES} "
                "entries; narrow it",
                "too_much_work",
            )
        if self.timer() > self._deadline:
            raise ProcedureError(
                f"Failed to glob: took more than {self.seconds:g} s; narrow the pattern",
                "too_much_work",
            )


def glob_paths(
    workspace: Workspace, start: Target, patterns: list[Pattern], budget: WalkBudget
) -> list[str]:
    """
    The paths below C{start} any of C{patterns} matches, sorted as the
    original server sorted them (UTF-16 code units).
    """
    found: set[str] = set()
    for pattern in patterns:
        found.update(_GlobWalk(workspace, pattern, budget).matches(start.path, start.relative))
    return sorted(found, key=lambda p: p.encode("utf-16-be"))


def _is_magic(segment: str) -> bool:
    return any(char in "*?[" for _, char in _unescaped(segment))


def _unescape(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        if segment[i] == "\\" and i + 1 < len(segment):
            i += 1
        out.append(segment[i])
        i += 1
    return "".join(out)


def _segment_regex(segment: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "\\" and i + 1 < len(segment):
            out.append(re.escape(segment[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            first = i + 1
            negate = segment[first : first + 1] in ("!", "^")
            if negate:
                first += 1
            end = segment.find("]", first + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = "".join(c if c == "-" else re.escape(c) for c in segment[first:end])
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


class _GlobWalk:
    """
    Matches one pattern: C{**} is zero or more directories, C{*}, C{?} and
    C{[...]} match within a name. Wildcards skip dot names unless the
    segment itself starts with a dot, never enter symlinked directories,
    and never match blocked names; literal segments may pass through a
    symlink that stays inside the workspace.

    The walk is a loop over (directory, segment) states, each visited once:
    C{**/**/**/x} costs what C{**/x} costs, however deep the tree, and a
    chain of thousands of directories needs no recursion.
    """

    def __init__(self, workspace: Workspace, pattern: Pattern, budget: WalkBudget) -> None:
        self.workspace = workspace
        self.pattern = pattern
        self.budget = budget
        self.regexes = {s: _segment_regex(s) for s in pattern.segments if _is_magic(s)}

    def matches(self, directory: str, relative: str) -> set[str]:
        segments = self.pattern.segments
        found: set[str] = set()
        seen: set[tuple[str, int]] = set()
        pending = [(directory, relative, 0)]
        while pending:
            state = pending.pop()
            directory, relative, index = state
            if (directory, index) in seen:
                continue
            seen.add((directory, index))
            self.budget.spend()
            if index == len(segments):
                if not self.pattern.directories_only or os.path.isdir(directory):
                    found.add(relative)
                continue
            segment = segments[index]
            last = index + 1 == len(segments)
            if segment == "**":
                pending.append((directory, relative, index + 1))
                for name, path, is_dir in self._entries(directory):
                    if name.startswith("."):
                        continue
                    if is_dir:
                        pending.append((path, _join(relative, name), index))
                    elif last and not self.pattern.directories_only:
                        found.add(_join(relative, name))
            elif segment in self.regexes:
                regex = self.regexes[segment]
                for name, path, is_dir in self._entries(directory):
                    if name.startswith(".") and not segment.startswith("."):
                        continue
                    if regex.fullmatch(name) and (last or is_dir):
                        pending.append((path, _join(relative, name), index + 1))
            else:
                step = self._literal(directory, relative, index, _unescape(segment))
                if step is not None:
                    pending.append(step)
        return found

    def _literal(
        self, directory: str, relative: str, index: int, name: str
    ) -> tuple[str, str, int] | None:
        if is_blocked(name):
            return None
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            return None
        real = os.path.realpath(path)
        if not self.workspace.contains(real):
            return None
        if index + 1 < len(self.pattern.segments) and not os.path.isdir(real):
            return None
        return real, _join(relative, name), index + 1

    def _entries(self, directory: str) -> Iterator[tuple[str, str, bool]]:
        """
        Names in C{directory} a wildcard may match, with whether each is a
        real (not symlinked) directory; symlinks leading outside are left out.
        """
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            return
        self.budget.spend(len(entries))
        for entry in entries:
            if is_blocked(entry.name):
                continue
            try:
                if entry.is_symlink() and not self.workspace.contains(os.path.realpath(entry.path)):
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            yield entry.name, entry.path, is_dir


def _join(relative: str, name: str) -> str:
    return name if relative == "." else f"{relative}/{name}"
