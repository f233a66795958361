"""
The C{cluso} command as users run it, next to C{twistd cluso}: what it
prints, what it leaves behind, and how it fails.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from support.servers import python_tool, start_child_server, stop_child_server

from cluso_router import __version__


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_every_way_to_start_prints_the_projects_version() -> None:
    """
    C{cluso --version}, C{python -m cluso_router --version} and C{twistd
    cluso --version} print cluso-router's version first.
    """
    for argv in (
        [python_tool("cluso"), "--version"],
        [sys.executable, "-m", "cluso_router", "--version"],
        [python_tool("twistd"), "cluso", "--version"],
    ):
        done = run(*argv)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"cluso-router {__version__}\n"), argv


def test_cluso_leaves_nothing_behind_and_logs_where_told(tmp_path: Path) -> None:
    """
    C{cluso} writes no pid file into the directory it serves; its log goes
    to standard output, or with C{--logfile} to that file only.
    """
    child = start_child_server(
        [python_tool("cluso"), "--listen", "tcp:0:interface=127.0.0.1"], cwd=tmp_path
    )
    assert stop_child_server(child) == 0
    assert list(tmp_path.iterdir()) == []
    assert any("listening on" in line for line in child.log)

    log = tmp_path.parent / "cluso.log"
    process = subprocess.Popen(
        [python_tool("cluso"), "--listen", "tcp:0:interface=127.0.0.1", "--logfile", str(log)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = 200
        while "listening on" not in (log.read_text() if log.exists() else "") and deadline:
            deadline -= 1
            time.sleep(0.05)
        assert deadline, "no 'listening on' in the log file"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert output == ""
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    """
    A bad option value, a bad C{--listen}, a missing root and an
    unreadable token file each give one line on stderr, exit status 2,
    and nothing on stdout.
    """
    cluso = python_tool("cluso")
    cases = {
        ("--rate-limit", "abc"): "--rate-limit: expected a number, not 'abc'",
        ("--listen", "3000"): "--listen '3000' is not a Twisted server endpoint",
        ("--root", str(tmp_path / "nope")): "no such directory",
        ("--token-file", str(tmp_path / "nope")): "cannot read token file",
        ("--logfile", str(tmp_path / "no" / "dir.log")): "--logfile",
    }
    for argv, message in cases.items():
        done = run(cluso, *argv, cwd=tmp_path)
        assert done.returncode == 2, argv
        assert done.stdout == ""
        [line] = done.stderr.splitlines()
        assert line.startswith("cluso: "), line
        assert message in line, line


def test_twistd_on_a_taken_port_ends_with_the_reason(tmp_path: Path) -> None:
    """
    Under twistd, which prints a traceback for a service that cannot
    start, the last line still says which address is taken and which
    option chooses another.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(
            python_tool("twistd"),
            "--pidfile=",
            "-n",
            "cluso",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            cwd=tmp_path,
        )
    assert done.returncode != 0
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in last
    assert "--listen" in last
