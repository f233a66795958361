"""
An incremental parser for C{text/event-stream} bodies, as the providers
send them: events split anywhere across reads, CR, LF or CRLF line ends,
comment lines used as keep-alives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: A longer line means the body is not an event stream.
MAX_LINE: Final = 4 * 1024 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")


class StreamFormatError(Exception):
    """
    The body cannot be read as an event stream.
    """


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """
        Add C{chunk}; return the events it completed, in order.
        """
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(self._buffer):
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break
            self._line(self._buffer[start : match.start()], events)
            start = match.end()
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_LINE:
            raise StreamFormatError(f"a line longer than {MAX_LINE} bytes")
        return events

    def _line(self, raw: bytes, events: list[ServerSentEvent]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StreamFormatError("a line that is not UTF-8") from None
        if not line:
            if self._data:
                events.append(ServerSentEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
