"""
A client that stops reading while events flow at full speed: it is closed
with 4008 within seconds, the server's memory stays bounded, and a fast
client on the same channel gets every event as quickly as without it.

The server runs as C{twistd -n cluso} in a child process; the publisher and
the fast client are lean blocking WebSocket clients in this process; the
slow client is another process that subscribes and is then stopped with
SIGSTOP.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.rawws import TEXT, frame, upgrade_request
from support.servers import ChildServer, rss_bytes, start_twistd, stop_child_server

#: Events per measured run, and at most this many published but not yet received.
EVENTS = 12_000
WINDOW = 32
PADDING = "x" * 400

SLOW_CLIENT = """
import base64, json, os, socket, sys, time
port = int(sys.argv[1])
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
sock.connect(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((f"GET /ws HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nUpgrade: websocket\\r\\n"
              f"Connection: Upgrade\\r\\nSec-WebSocket-Key: {key}\\r\\n"
              "Sec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
seen = b""
while b"\\r\\n\\r\\n" not in seen:
    seen += sock.recv(65536)
payload = json.dumps({"type": "subscribe", "channel": "stream", "id": 1}).encode()
sock.sendall(bytes([0x81, 0x80 | len(payload)]) + bytes(4) + payload)
while b'"subscribed"' not in seen:
    seen += sock.recv(65536)
print(seen.split(b'"connectionId":"', 1)[1].split(b'"', 1)[0].decode(), flush=True)
time.sleep(3600)
"""


@dataclass
class LeanClient:
    """
    A blocking WebSocket client that parses whatever frames have arrived.
    """

    sock: socket.socket
    buffer: bytes = b""
    messages: list[Any] = field(default_factory=list)

    @classmethod
    def connect(cls, port: int) -> LeanClient:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request("127.0.0.1", port))
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            client.buffer += sock.recv(65536)
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert client.next()["data"]["status"] == "connected"
        return client

    def send(self, *messages: Any) -> None:
        self.sock.sendall(b"".join(frame(TEXT, json.dumps(m).encode()) for m in messages))

    def receive(self, timeout: float = 10.0) -> list[Any]:
        """
        Every complete text message received, waiting for more data when
        none is buffered.
        """
        messages = self._parse()
        while not messages:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            assert ready, f"nothing received within {timeout}s"
            chunk = self.sock.recv(1 << 20)
            assert chunk, "connection closed"
            self.buffer += chunk
            messages = self._parse()
        return messages

    def _parse(self) -> list[Any]:
        messages, offset, buffer = [], 0, self.buffer
        while len(buffer) - offset >= 2:
            length, start = buffer[offset + 1] & 0x7F, offset + 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                (length,), start = struct.unpack_from("!H", buffer, offset + 2), offset + 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                (length,), start = struct.unpack_from("!Q", buffer, offset + 2), offset + 10
            if len(buffer) - start < length:
                break
            if buffer[offset] & 0x0F == 0x1:
                messages.append(json.loads(buffer[start : start + length]))
            offset = start + length
        self.buffer = buffer[offset:]
        return messages

    def next(self) -> Any:
        while not self.messages:
            self.messages.extend(self.receive())
        return self.messages.pop(0)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Run:
    latencies: list[float]
    peak_rss: int
    closed_after: float | None


def stream(child: ChildServer, port: int, watch_for: str | None = None) -> tuple[Run, list[int]]:
    """
    Publish L{EVENTS} events as fast as a window of L{WINDOW} unreceived
    events allows, through one connection, to a fresh fast subscriber on
    another; return the latencies and what the subscriber got.

    With C{watch_for}, also note when that text first appears in the
    server's log (seconds after the run started).
    """
    fast = LeanClient.connect(port)
    fast.send({"type": "subscribe", "channel": "stream", "id": 1})
    assert fast.next()["data"]["status"] == "subscribed"
    publisher = LeanClient.connect(port)
    sent_at: list[float] = []
    latencies: list[float] = []
    received: list[int] = []
    peak = rss_bytes(child.process.pid)
    closed_after = None
    log_seen = len(child.log)
    started = time.perf_counter()
    try:
        while len(received) < EVENTS:
            batch = []
            while len(sent_at) < EVENTS and len(sent_at) - len(received) < WINDOW:
                seq = len(sent_at)
                sent_at.append(time.perf_counter())
                batch.append({"type": "send", "channel": "stream", "data": [seq, PADDING]})
            if batch:
                publisher.send(*batch)
            for message in fast.receive():
                now = time.perf_counter()
                seq = message["data"][0]
                received.append(seq)
                latencies.append(now - sent_at[seq])
            if len(received) % 1000 < WINDOW:
                peak = max(peak, rss_bytes(child.process.pid))
                if (
                    watch_for
                    and closed_after is None
                    and any(watch_for in line for line in child.log[log_seen:])
                ):
                    closed_after = time.perf_counter() - started
    finally:
        fast.close()
        publisher.close()
    return Run(latencies, peak, closed_after), received


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99)]


def scrape(child: ChildServer) -> str:
    with urllib.request.urlopen(child.url + "metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


@pytest.fixture
def child(tmp_path: Path) -> Iterator[ChildServer]:
    server = start_twistd(tmp_path, "--sources", "", "--rate-limit", "0")
    yield server
    stop_child_server(server)


def test_stopped_reader_is_closed_and_nobody_waits_for_it(child: ChildServer) -> None:
    """
    A subscriber process stopped with SIGSTOP while events flow at full
    speed is closed with 4008 within seconds; meanwhile the server's memory
    grows by less than 64 MiB, and a fast subscriber on the same channel
    receives every event in order with a p99 latency within 2x of runs
    without the stopped one.
    """
    port = child.port
    stream(child, port)
    baseline, _ = stream(child, port)

    slow = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLIENT, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert slow.stdout is not None
        slow_id = slow.stdout.readline().strip()
        assert slow_id.startswith("conn-")
        os.kill(slow.pid, signal.SIGSTOP)
        rss_before = rss_bytes(child.process.pid)
        with_slow, received = stream(child, port, watch_for=f"slow consumer {slow_id}")
    finally:
        slow.kill()
        slow.wait()
    after, _ = stream(child, port)

    deadline = time.monotonic() + 5
    while metric(metrics := scrape(child), 'cluso_server_closes_total{code="4008"}') < 1:
        assert time.monotonic() < deadline, "the slow consumer was never closed"
        time.sleep(0.1)
    assert metric(metrics, "cluso_slow_consumer_closes_total") == 1
    assert with_slow.closed_after is not None
    assert with_slow.closed_after < 10
    assert received == list(range(EVENTS))
    assert with_slow.peak_rss - rss_before < 64 * 1024 * 1024
    reference = max(p99(baseline.latencies), p99(after.latencies))
    measured = p99(with_slow.latencies)
    print(
        f"p99 without: {p99(baseline.latencies) * 1e3:.2f} / {p99(after.latencies) * 1e3:.2f} ms,"
        f" with the stopped client: {measured * 1e3:.2f} ms;"
        f" closed after {with_slow.closed_after:.2f} s;"
        f" RSS +{(with_slow.peak_rss - rss_before) / 2**20:.1f} MiB"
    )
    assert measured <= 2 * reference
