"""
A minimal blocking WebSocket client on a plain socket, for tests that need
control a library would hide: tiny receive buffers, stopping reads, resets;
and the handshake request and masked frames such tests send by hand.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

TEXT, CLOSE, PING = 0x1, 0x8, 0x9


def upgrade_request(host: str, port: int, path: str = "/ws") -> bytes:
    """
    A WebSocket opening handshake request with a fresh key.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """
    One masked client frame (masked as a whole integer, fast enough for
    large payloads and tight loops).
    """
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    key = os.urandom(4)
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(payload), "big"
    )
    return head + key + masked


def close_code(payload: bytes) -> int | None:
    """
    The status code of a close frame's payload (C{None} when it has none).
    """
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class RawWebSocket:
    """
    A blocking WebSocket client that shows every frame as it is: for
    protocol violations, readers that stop reading, and tests outside the
    reactor. (Tests on the reactor use L{cluso_router.testing.connect_client}.)

    @param timeout: seconds any one read or write may block, if given.
    """

    def __init__(
        self,
        host: str,
        port: int,
        rcvbuf: int | None = None,
        path: str = "/ws",
        timeout: float | None = None,
    ):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, port))
        self.sock.sendall(upgrade_request(host, port, path))
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode("latin-1"))

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self._buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send_json(self, message: Any) -> None:
        self.sock.sendall(frame(TEXT, json.dumps(message).encode()))

    def receive_frame(self) -> tuple[int, bytes]:
        """
        The next frame's opcode and payload (server frames are unmasked).
        """
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def receive_json(self) -> Any:
        """
        The next text message, skipping pings.
        """
        while True:
            opcode, payload = self.receive_frame()
            if opcode == TEXT:
                return json.loads(payload)
            if opcode == CLOSE:
                raise EOFError(f"closed by server with code {close_code(payload)}")

    def until_close(self, reset_ok: bool = False) -> tuple[list[Any], int | None]:
        """
        The text messages received up to the server's close frame, and the
        code it carries; with C{reset_ok}, a reset also ends them (code
        C{None}).
        """
        messages = []
        try:
            while True:
                opcode, payload = self.receive_frame()
                if opcode == CLOSE:
                    return messages, close_code(payload)
                if opcode == TEXT:
                    messages.append(json.loads(payload))
        except ConnectionResetError:
            if not reset_ok:
                raise
            return messages, None

    def reset(self) -> None:
        """
        Drop the connection with a TCP reset.
        """
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
