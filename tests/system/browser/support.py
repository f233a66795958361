"""
Helpers of the browser tests: a restartable server process and small HTTP calls.
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.servers import ChildServer, start_child_server, stop_child_server, twistd_cluso

HARNESS_URL = "/__tests__/harness.js"


def restartable_port() -> int:
    """
    A free loopback port below the kernel's range for outgoing connections,
    so no client socket of another program can take it while a test
    restarts its server on it.
    """
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for _ in range(100):
        port = random.randrange(max(1024, low - 10000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


@dataclass
class Server:
    """
    C{twistd -n cluso} on loopback with token auth, stoppable and
    restartable on the same port with the same token (so a signed-in page
    stays signed in).
    """

    root: Path
    extra_args: list[str] = field(default_factory=list)
    child: ChildServer | None = None
    port: int = field(default_factory=restartable_port)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Server:
        assert self.child is None, "already running"
        self.child = start_child_server(
            twistd_cluso(
                "--root",
                str(self.root),
                "--token",
                self.token,
                *self.extra_args,
                listen=f"tcp:{self.port}:interface=127.0.0.1",
            ),
            cwd=self.root,
            auth=True,
        )
        return self

    def sign_in_url(self, path: str = "") -> str:
        """
        C{path} with the token, as the server prints it: opening it sets
        the auth cookie and redirects to C{path}.
        """
        return f"{self.url}{path}?token={self.token}"

    def stop(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            stop_child_server(child)

    def log(self) -> str:
        return "".join(self.child.log) if self.child else ""

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {self.token}",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def subscribers(self, channel: str) -> int:
        count: int = self.get("api/health")["data"]["channels"].get(channel, 0)
        return count


def unused_port() -> int:
    """
    A loopback port nothing listens on (bound, then released).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
