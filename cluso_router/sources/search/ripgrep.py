"""
ripgrep's side of search: the command lines it is run with, and the
results made from its C{--json} messages. The pure-Python engine
(C{cluso_grep}) takes the same command lines and prints the same messages.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cluso_router._json import loads
from cluso_router.workspace.paths import BLOCKED_NAMES

#: Lines longer than this are cut to an excerpt around the match.
MAX_LINE_CHARS: Final = 500

Result = dict[str, Any]


@dataclass(frozen=True)
class Pattern:
    """
    What to look for, and how.
    """

    text: str
    regex: bool = False
    case_sensitive: bool = False
    context_lines: int = 0


def common_args(command: Sequence[str]) -> list[str | bytes]:
    return [*command, "--no-config", "--no-require-git"]


def list_files_argv(command: Sequence[str], path: str) -> list[str | bytes]:
    """
    List the files under C{path} a search may cover: C{.gitignore}
    respected, hidden files skipped, blocked names (in any case) left out;
    NUL-separated, so any file name survives.
    """
    argv = [*common_args(command), "--files", "--null"]
    for name in sorted(BLOCKED_NAMES):
        argv += ["--iglob", f"!{name}"]
    argv.append("--")
    if path != ".":
        argv.append(path)
    return argv


def search_argv(
    command: Sequence[str],
    pattern: Pattern,
    files: Iterable[bytes],
    max_lines: int,
    options: Sequence[str] = (),
) -> list[str | bytes]:
    """
    Search exactly C{files} (from L{list_files_argv}) for C{pattern},
    reading no file past its C{max_lines}th matching line (a search never
    needs more results than that from one file); C{options} are the
    program's own.
    """
    return [
        *pattern_args(command, pattern),
        "--max-count",
        str(max_lines),
        *options,
        "--",
        *files,
    ]


def check_argv(command: Sequence[str], pattern: Pattern) -> list[str | bytes]:
    """
    Search nothing, only to learn whether ripgrep accepts C{pattern}.
    """
    return [*pattern_args(command, pattern), "--", os.devnull]


def pattern_args(command: Sequence[str], pattern: Pattern) -> list[str | bytes]:
    argv = [*common_args(command), "--json"]
    if not pattern.regex:
        argv.append("--fixed-strings")
    argv.append("--case-sensitive" if pattern.case_sensitive else "--ignore-case")
    if pattern.context_lines:
        argv += ["--context", str(pattern.context_lines)]
    argv += ["--regexp", pattern.text]
    return argv


def pattern_error(stderr: str) -> str:
    """
    ripgrep's complaint about a pattern, made into one readable line.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    # Some complaints come as "rg: <reason>" followed by advice.
    reasons = reasons or [
        line.removeprefix("rg:").strip()
        for line in lines
        if line.startswith("rg:") and not line.endswith("parse error:")
    ]
    shown = "; ".join(reasons) or (lines[-1] if lines else "rejected by ripgrep")
    return f"Invalid search pattern: {shown}"


class JsonResults:
    """
    Reads ripgrep's C{--json} messages, one per L{feed}, and hands over
    each file's results when ripgrep finishes that file.

    ripgrep prints a file's messages together, so a file's context lines
    are all known at its C{end} message. Files ripgrep finds to be binary
    are dropped, as a recursive ripgrep search would skip them.

    @ivar stats: the C{stats} of the closing C{summary} message, once read.
    """

    def __init__(self, context_lines: int, on_results: Callable[[list[Result]], None]) -> None:
        self._context_lines = context_lines
        self._on_results = on_results
        self._lines: dict[int, bytes] = {}
        self._matches: list[tuple[int, bytes, list[tuple[int, int]]]] = []
        self.stats: dict[str, Any] = {}

    def feed(self, record: bytes) -> None:
        if not record.strip():
            return
        message = loads(record)
        kind = message.get("type")
        data = message.get("data", {})
        if kind == "begin":
            self._lines.clear()
            self._matches.clear()
        elif kind in ("match", "context"):
            number = data["line_number"]
            line = _arbitrary_data(data["lines"])
            self._lines[number] = line
            if kind == "match":
                spans = [(m["start"], m["end"]) for m in data["submatches"]]
                self._matches.append((number, line, spans))
        elif kind == "end":
            if data.get("binary_offset") is None and self._matches:
                self._on_results(self._results(_arbitrary_text(data["path"])))
            self._lines.clear()
            self._matches.clear()
        elif kind == "summary":
            self.stats = data.get("stats", {})

    def _results(self, file: str) -> list[Result]:
        results = []
        for number, line, spans in self._matches:
            around = range(number - self._context_lines, number + self._context_lines + 1)
            for start, end in spans:
                context = "\n".join(
                    _excerpt(self._lines[n], start if n == number else 0)
                    for n in around
                    if n in self._lines
                )
                results.append(
                    {
                        "file": file,
                        "line": number,
                        "column": len(line[:start].decode("utf-8", "replace")) + 1,
                        "match": line[start:end].decode("utf-8", "replace")[:MAX_LINE_CHARS],
                        "context": context,
                    }
                )
        return results


def _excerpt(line: bytes, start: int) -> str:
    """
    C{line} as text without its line ending, cut to at most
    L{MAX_LINE_CHARS} characters that include byte offset C{start}.
    """
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    if len(text) <= MAX_LINE_CHARS:
        return text
    at = len(line[:start].decode("utf-8", "replace"))
    begin = max(0, min(at - MAX_LINE_CHARS // 5, len(text) - MAX_LINE_CHARS))
    return text[begin : begin + MAX_LINE_CHARS]


def _arbitrary_data(value: dict[str, str]) -> bytes:
    """
    ripgrep's "arbitrary data": UTF-8 text, or base64 when it is not UTF-8.
    """
    if "text" in value:
        return value["text"].encode("utf-8")
    return base64.b64decode(value["bytes"])


def _arbitrary_text(value: dict[str, str]) -> str:
    return _arbitrary_data(value).decode("utf-8", "replace")
