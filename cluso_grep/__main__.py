"""
C{python -P -m cluso_grep}: the ripgrep command lines the search source
runs, and one more option.

    --files [--null] [--iglob !GLOB ...] [-- PATH]
        list the files a search covers (L{cluso_grep.walk});
    --json [--fixed-strings] (--case-sensitive | --ignore-case)
           [--context N] [--max-count N] [--max-bytes N] --regexp PATTERN -- FILE...
        search FILEs (L{cluso_grep.grep}).

C{--no-config} and C{--no-require-git} are accepted and change nothing.
C{--max-bytes} is this program's own: the bytes the files together may
take; when the next file would go past it, the search ends with status 3.
Other statuses are ripgrep's: 0 something found, 1 nothing, 2 an error
(told on stderr as C{error: ...}; for a pattern, in ripgrep's words).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import BinaryIO, Final

from cluso_grep import BUDGET_SPENT
from cluso_grep.grep import BudgetSpent, Message, Searcher, dumps
from cluso_grep.rustregex import PatternError, compile_pattern

FLAGS: Final = frozenset(
    {
        "--no-config",
        "--no-require-git",
        "--files",
        "--null",
        "--json",
        "--fixed-strings",
        "--case-sensitive",
        "--ignore-case",
    }
)
VALUES: Final = frozenset({"--iglob", "--context", "--max-count", "--max-bytes", "--regexp"})
NUMBERS: Final = frozenset({"--context", "--max-count", "--max-bytes"})


#: Output waits at most this long in the buffer, so the reader sees the
#: first files listed or found soon.
FLUSH_SECONDS: Final = 0.02


class UsageError(Exception):
    pass


class Output:
    """
    Standard output, buffered whatever C{PYTHONUNBUFFERED} says (a write
    per line would cost a system call each), and flushed by the first write
    that comes L{FLUSH_SECONDS} or more after the last flush.
    """

    def __init__(self) -> None:
        self._file: BinaryIO = open(sys.stdout.fileno(), "wb", 65536, closefd=False)  # noqa: SIM115
        self._flushed = time.monotonic()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        now = time.monotonic()
        if now - self._flushed >= FLUSH_SECONDS:
            self.flush()
            self._flushed = now

    def flush(self) -> None:
        self._file.flush()


def parse(argv: Sequence[str]) -> tuple[set[str], dict[str, list[str]], list[str]]:
    """
    The flags, the options with their values, and the paths in C{argv}.
    """
    flags: set[str] = set()
    values: dict[str, list[str]] = {}
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            return flags, values, rest
        name, equals, value = arg.partition("=")
        if arg in FLAGS:
            flags.add(arg)
        elif name in VALUES:
            if not equals:
                if not rest:
                    raise UsageError(f"{name} needs a value")
                value = rest.pop(0)
            if name in NUMBERS and not value.isdigit():
                raise UsageError(f"{name} needs a whole number, not {value!r}")
            values.setdefault(name, []).append(value)
        elif arg.startswith("-"):
            raise UsageError(f"unrecognized flag {arg}")
        else:
            return flags, values, [arg, *rest]
    return flags, values, []


def run(argv: Sequence[str]) -> int:
    flags, values, paths = parse(argv)
    if "--files" in flags:
        return list_files(values.get("--iglob", []), paths, b"\0" if "--null" in flags else b"\n")
    if "--json" not in flags or "--regexp" not in values:
        raise UsageError("searching needs --json and --regexp")
    try:
        pattern = compile_pattern(
            values["--regexp"][-1],
            fixed="--fixed-strings" in flags,
            ignore_case="--ignore-case" in flags,
        )
    except PatternError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    out = Output()

    def emit(message: Message) -> None:
        out.write(dumps(message))

    searcher = Searcher(
        pattern,
        emit,
        context=_number(values, "--context") or 0,
        max_count=_number(values, "--max-count"),
        max_bytes=_number(values, "--max-bytes"),
    )
    status = 0
    try:
        for path in paths:
            searcher.search(path)
    except BudgetSpent:
        status = BUDGET_SPENT
    out.write(dumps(searcher.summary()))
    out.flush()
    for error in searcher.errors:
        sys.stderr.write(f"rg: {error}\n")
    if status:
        return status
    if searcher.errors:
        return 2
    return 0 if searcher.searches_with_match else 1


def list_files(globs: Sequence[str], paths: Sequence[str], separator: bytes) -> int:
    if any(not glob.startswith("!") for glob in globs):
        raise UsageError("only exclusions (--iglob !GLOB) are supported")
    # Imported here: searching needs neither pathspec nor the walker.
    from cluso_grep.walk import Walker

    walker = Walker([glob[1:] for glob in globs])
    out = Output()
    listed = 0
    starts: list[str | None] = [*paths] or [None]
    for start in starts:
        for path in walker.files(start):
            out.write(os.fsencode(path) + separator)
            listed += 1
    out.flush()
    for error in walker.errors:
        sys.stderr.write(f"rg: {error}\n")
    if walker.errors:
        return 2
    return 0 if listed else 1


def _number(values: dict[str, list[str]], name: str) -> int | None:
    given = values.get(name)
    return int(given[-1]) if given else None


def main() -> int:
    try:
        return run(sys.argv[1:])
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except BrokenPipeError:
        # The reader went away (the search was cancelled): nothing to tell.
        return 2


if __name__ == "__main__":
    sys.exit(main())
