"""
Searching files for a compiled pattern and reporting each file's matching
lines, with context lines around them, in ripgrep's C{--json} messages.

The messages hold the fields ripgrep prints that a reader of matches needs:
C{begin}, C{match} and C{context} (C{path}, C{lines}, C{line_number},
C{submatches} with byte offsets into the line), C{end}, and a closing
C{summary} with C{stats.bytes_searched} and C{stats.searches}. As ripgrep
does, a file holding a NUL byte is taken for binary and reported with no
lines, a UTF-8 byte order mark is dropped, lines end at C{\\n} (a C{\\r}
before it belongs to the line), and text that is not UTF-8 is sent as
base64 C{bytes}.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from re import Pattern
from typing import Any, Final

BOM: Final = b"\xef\xbb\xbf"

Message = dict[str, Any]


class BudgetSpent(Exception):
    """
    Reading the next file would go past the bytes this search may read.
    """


@dataclass
class Searcher:
    """
    Searches one file after another with C{pattern}, giving every message
    to C{emit}.

    @ivar max_count: matching lines reported per file at most.
    @ivar max_bytes: bytes all the files together may take, or C{None}.
    """

    pattern: Pattern[str]
    emit: Callable[[Message], None]
    context: int = 0
    max_count: int | None = None
    max_bytes: int | None = None
    bytes_searched: int = 0
    searches: int = 0
    searches_with_match: int = 0
    errors: list[str] = field(default_factory=list)

    def search(self, path: str) -> None:
        """
        Search the file at C{path}.

        @raise BudgetSpent: when it does not fit in what is left of
            C{max_bytes}; nothing of it was searched.
        """
        room = None if self.max_bytes is None else self.max_bytes - self.bytes_searched
        try:
            with open(path, "rb") as f:
                data = f.read() if room is None else f.read(room + 1)
        except OSError as e:
            self.errors.append(f"{path}: {e.strerror}")
            return
        if room is not None and len(data) > room:
            raise BudgetSpent(path)
        self.bytes_searched += len(data)
        self.searches += 1
        if b"\0" in data:
            return
        text = data.removeprefix(BOM).decode("utf-8", "surrogateescape")
        found = matching_lines(self.pattern, text, self.max_count)
        if not found:
            return
        self.searches_with_match += 1
        self._report(path, text, found)

    def summary(self) -> Message:
        return {
            "type": "summary",
            "data": {
                "stats": {
                    "bytes_searched": self.bytes_searched,
                    "searches": self.searches,
                    "searches_with_match": self.searches_with_match,
                }
            },
        }

    def _report(self, path: str, text: str, found: dict[int, list[tuple[int, int]]]) -> None:
        named = {"path": _data(path)}
        self.emit({"type": "begin", "data": named})
        lines = Lines(text)
        shown: set[int] = set()
        for number in found:
            shown.update(range(number - self.context, number + self.context + 1))
        for number in sorted(n for n in shown if 1 <= n <= lines.count):
            line = lines[number]
            spans = found.get(number)
            self.emit(
                {
                    "type": "match" if spans else "context",
                    "data": {
                        **named,
                        "lines": _data(line),
                        "line_number": number,
                        "submatches": [_submatch(line, start, end) for start, end in spans or ()],
                    },
                }
            )
        self.emit({"type": "end", "data": {**named, "binary_offset": None}})


def matching_lines(
    pattern: Pattern[str], text: str, max_count: int | None = None
) -> dict[int, list[tuple[int, int]]]:
    """
    The lines of C{text} that C{pattern} matches (at most C{max_count}),
    by 1-based number, each with the character spans of its matches within
    the line.

    The whole text is searched at once, which is many times faster than
    line by line; the pattern (L{cluso_grep.rustregex}) cannot match a line
    break, so no match spans two lines. As Rust's iterator does, an empty
    match right where the previous match ended is skipped.
    """
    found: dict[int, list[tuple[int, int]]] = {}
    number = 1
    counted = 0
    line_start = 0
    line_end = -1
    last_end = -1
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end and start in (last_end, len(text)):
            continue
        last_end = end
        if start > line_end:
            if max_count is not None and len(found) >= max_count:
                break
            number += text.count("\n", counted, start)
            counted = start
            line_start = text.rfind("\n", 0, start) + 1
            line_end = text.find("\n", start)
            if line_end < 0:
                line_end = len(text)
            found[number] = []
        found[number].append((start - line_start, end - line_start))
    return found


class Lines:
    """
    The lines of a text by 1-based number, each with its C{\\n}.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts = [0]
        at = text.find("\n")
        while at >= 0:
            self._starts.append(at + 1)
            at = text.find("\n", at + 1)
        self.count = len(self._starts) - (1 if self._starts[-1] == len(text) else 0)

    def __getitem__(self, number: int) -> str:
        start = self._starts[number - 1]
        end = self._starts[number] if number < len(self._starts) else len(self._text)
        return self._text[start:end]


def _data(text: str) -> dict[str, str]:
    """
    ripgrep's "arbitrary data": C{text} when it is UTF-8, else C{bytes} in
    base64 (the undecodable bytes of a line survive as surrogates).
    """
    if text.isascii():
        return {"text": text}
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return {"bytes": base64.b64encode(raw).decode("ascii")}
    return {"text": text}


def _submatch(line: str, start: int, end: int) -> Message:
    return {
        "match": _data(line[start:end]),
        "start": _byte_offset(line, start),
        "end": _byte_offset(line, end),
    }


def _byte_offset(line: str, at: int) -> int:
    if line.isascii():
        return at
    return len(line[:at].encode("utf-8", "surrogateescape"))


def dumps(message: Message) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
