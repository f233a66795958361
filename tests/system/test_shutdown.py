"""
Graceful shutdown of the real server: on SIGTERM (what C{twistd} and
service managers send) every WebSocket client is told 1001 "going away",
the event sources stop and end the child processes they run, and the
process exits within 5 seconds, whether or not the clients finish the
closing handshake.
"""

from __future__ import annotations

import json
import signal
import struct
import time
import urllib.request
from pathlib import Path

from support.rawws import CLOSE, TEXT, RawWebSocket, frame
from support.servers import python_tool, start_twistd, stop_child_server

CLIENTS = 100


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_language_server(url: str, pid: int) -> set[int]:
    """
    Save a Python file through the API, which makes the LSP source start
    its language server; return the server's child processes.
    """
    request = urllib.request.Request(
        url + "api/files/write",
        data=json.dumps({"path": "main.py", "content": "import os\n"}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
    deadline = time.monotonic() + 20
    while not (spawned := children_of(pid)):
        assert time.monotonic() < deadline, "the language server never started"
        time.sleep(0.1)
    return spawned


def test_sigterm_closes_every_client_with_1001_and_exits_quickly(tmp_path: Path) -> None:
    """
    With a language server running and 100 clients connected (half of them
    answer the close frame, half never do), SIGTERM makes the server send
    each client a 1001 close frame, end the language server, and exit within
    5 seconds (twistd ends by the signal it got).
    """
    (tmp_path / "main.py").write_text("print('hello')\n")
    child = start_twistd(tmp_path, "--lsp", f"python={python_tool('pylsp')}")
    clients = []
    try:
        spawned = start_language_server(child.url, child.process.pid)
        for n in range(CLIENTS):
            ws = RawWebSocket(*child.address)
            assert ws.receive_json()["data"]["status"] == "connected"
            ws.send_json({"type": "subscribe", "channel": "files", "id": n})
            assert ws.receive_json()["data"]["status"] == "subscribed"
            ws.sock.settimeout(10)
            clients.append(ws)

        child.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        codes = []
        for n, ws in enumerate(clients):
            opcode, payload = ws.receive_frame()
            while opcode == TEXT:
                opcode, payload = ws.receive_frame()
            assert opcode == CLOSE
            codes.append(struct.unpack("!H", payload[:2])[0])
            if n % 2 == 0:
                ws.sock.sendall(frame(CLOSE, struct.pack("!H", 1001)))
        status = child.process.wait(timeout=10)
        exited_after = time.monotonic() - signalled
        deadline = time.monotonic() + 2
        while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for ws in clients:
            ws.close()
        stop_child_server(child)
    assert codes == [1001] * CLIENTS
    assert status in (0, -signal.SIGTERM)
    assert exited_after < 5, f"exit took {exited_after:.2f}s"
    assert not [pid for pid in spawned if alive(pid)], "a child process outlived the server"
    log = "".join(child.log)
    assert "Traceback" not in log, log
