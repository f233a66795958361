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
