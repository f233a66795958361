"""
The base protocol of LSP: each JSON-RPC message is a header block with a
C{Content-Length}, a blank line, and that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

from typing import Any, Final

from cluso_router._json import dumps

#: Bigger headers or bodies mean the peer is not speaking LSP.
MAX_HEADER: Final = 8 * 1024
MAX_BODY: Final = 64 * 1024 * 1024


class FramingError(Exception):
    """
    The byte stream cannot be split into messages; the connection is lost.
    """


def encode_message(message: Any) -> bytes:
    body = dumps(message)
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class MessageDecoder:
    """
    Splits bytes arriving in arbitrary pieces into message bodies.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._length: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add C{data}; return the bodies it completed, in order.

        @raise FramingError: on a header without a valid C{Content-Length}.
        """
        self._buffer += data
        bodies: list[bytes] = []
        while True:
            if self._length is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEADER:
                        raise FramingError("header block too long")
                    return bodies
                self._length = _content_length(bytes(self._buffer[:end]))
                del self._buffer[: end + 4]
            if len(self._buffer) < self._length:
                return bodies
            bodies.append(bytes(self._buffer[: self._length]))
            del self._buffer[: self._length]
            self._length = None


def _content_length(header: bytes) -> int:
    length: int | None = None
    for line in header.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            raise FramingError(f"malformed header line {line[:80]!r}")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise FramingError(f"bad Content-Length {value[:40]!r}") from None
    if length is None:
        raise FramingError("header without Content-Length")
    if not 0 <= length <= MAX_BODY:
        raise FramingError(f"Content-Length {length} out of range")
    return length
