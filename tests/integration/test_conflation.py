"""
Conflation over a real socket: a client that stopped reading catches up on the latest.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from support.rawws import RawWebSocket
from twisted.internet import threads


def diagnostics(file: str, version: int) -> dict[str, Any]:
    return {
        "diagnostics": [
            {"file": file, "line": version, "column": 1, "message": "m", "severity": "error"}
        ],
        "cleared": False,
    }


@pytest_twisted.ensureDeferred
async def test_client_behind_gets_the_latest_diagnostics_per_file(server: Any) -> None:
    """
    Over a real socket: a client that does not read while 600 diagnostics
    updates for three files are published gets, when it reads again, the
    latest update of each file, having skipped most of the rest; nothing
    it got is older than something it got before for the same file.
    """
    router = server.service.router
    host, port = server.url.split("//")[1].strip("/").split(":")

    def subscribe() -> RawWebSocket:
        ws = RawWebSocket(host, int(port), rcvbuf=4096)
        assert ws.receive_json()["data"]["status"] == "connected"
        ws.send_json({"type": "subscribe", "channel": "diagnostics", "id": 1})
        assert ws.receive_json()["data"]["status"] == "subscribed"
        return ws

    ws = await threads.deferToThread(subscribe)
    (session,) = list(router.sessions())
    filler = {"diagnostics": [], "cleared": True, "pad": "x" * 60_000}
    while session.queued_bytes == 0:
        router.publish("diagnostics", filler)
    files = ("a.py", "b.py", "c.py")
    for version in range(200):
        for file in files:
            router.publish("diagnostics", {"file": file, **diagnostics(file, version)})
    assert session.queued_bytes < 512 * 1024

    def read_until_latest() -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        while {(f, 199) for f in files} - set(seen):
            data = ws.receive_json()["data"]
            if "file" in data:
                seen.append((data["file"], data["diagnostics"][0]["line"]))
        ws.close()
        return seen

    seen = await threads.deferToThread(read_until_latest)
    assert len(seen) < 300
    for file in files:
        versions = [v for f, v in seen if f == file]
        assert versions == sorted(versions)
        assert versions[-1] == 199
    assert router.queue_counters.conflated["diagnostics"] > 300
