"""
In-memory transports for tests of the send path.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport


class CountingTransport(StringTransport):
    """
    A transport that counts its writes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def split_frames(data: bytes) -> list[bytes]:
    """
    The unmasked server frames (payloads under 64 KiB) in what was written.
    """
    frames: list[bytes] = []
    while data:
        length = data[1] & 0x7F
        header = 2
        if length == 126:
            length = int.from_bytes(data[2:4], "big")
            header = 4
        frames.append(data[: header + length])
        data = data[header + length :]
    return frames
