"""
The real server as users start it: C{twistd -n cluso} and
C{python -m cluso_router} in child processes, reached over loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from support.rawws import RawWebSocket
from support.servers import ChildServer, python_tool, start_child_server, stop_child_server


def subscribe_publish_receive(child: ChildServer) -> dict[str, object]:
    ws = RawWebSocket(*child.address, timeout=5)
    try:
        greeting = ws.receive_json()
        assert greeting["data"]["status"] == "connected"
        ws.send_json({"type": "subscribe", "channel": "files", "id": 1})
        assert ws.receive_json()["data"]["status"] == "subscribed"
        request = urllib.request.Request(
            child.url + "api/events/files",
            data=json.dumps({"file": "src/app.py", "event": "change"}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["data"]["delivered"] == 1
        event: dict[str, object] = ws.receive_json()
        return event
    finally:
        ws.close()


def test_twistd_cluso_serves_subscribe_and_publish(twistd_server: ChildServer) -> None:
    """
    C{twistd -n cluso} starts, logs its URL, and a WebSocket client gets an
    event published through C{POST /api/events/files}.
    """
    event = subscribe_publish_receive(twistd_server)
    assert event["channel"] == "files"
    assert event["data"] == {"file": "src/app.py", "event": "change"}


def test_python_m_cluso_router_runs_the_same_service(tmp_path: Path) -> None:
    """
    C{python -m cluso_router} serves the same protocol, rooted at --root,
    and exits cleanly on SIGTERM.
    """
    child = start_child_server(
        [
            sys.executable,
            "-m",
            "cluso_router",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--root",
            str(tmp_path),
        ],
        cwd=tmp_path,
    )
    try:
        ws = RawWebSocket(*child.address, timeout=5)
        greeting = ws.receive_json()
        ws.close()
        assert greeting["data"]["cwd"] == str(tmp_path.resolve())
        assert subscribe_publish_receive(child)["channel"] == "files"
    finally:
        assert stop_child_server(child) == 0


def test_help_documents_every_option() -> None:
    """
    C{twistd cluso --help} names each option of the service.
    """
    from cluso_router.tap import Options

    output = subprocess.run(
        [python_tool("twistd"), "cluso", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for long_name, *_ in Options.optParameters:
        assert f"--{long_name}" in output
    for flag in getattr(Options, "optFlags", []):
        assert f"--{flag[0]}" in output


def test_bad_options_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    """
    A root that does not exist and a non-positive ping interval are refused
    before anything starts.
    """
    missing = subprocess.run(
        [sys.executable, "-m", "cluso_router", "--root", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("python -m cluso_router: --root ")
    assert "no such directory" in missing.stderr
    zero = subprocess.run(
        [sys.executable, "-m", "cluso_router", "--ping-interval", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert zero.returncode == 2
    assert "ping interval must be positive" in zero.stderr


def test_port_in_use_fails_to_start(tmp_path: Path) -> None:
    """
    Starting on a port that is taken exits non-zero and says why in one
    line: the address, and the option that chooses another.
    """
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cluso_router",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"python -m cluso_router: cannot listen on 127.0.0.1:{port}: the address is "
        "already in use (is another server running there?); choose another address "
        f"with --listen, e.g. --listen tcp:{port + 1}:interface=127.0.0.1"
    ]
    assert result.stdout == ""
