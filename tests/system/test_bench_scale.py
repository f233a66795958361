"""
The scale benchmark's quick mode, so it keeps working: a few hundred idle
connections to cluso-router and to Node ws, then to two cluso-router
workers over a redis-server of its own; every broadcast reaches every
connection once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    for tool in ("node", "npm", "redis-server"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; the scale benchmark needs it")
    output = tmp_path_factory.mktemp("scale") / "quick.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scale.py"), "--quick", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(output.read_text()), completed.stdout


@pytest.mark.parametrize("server", ["cluso-router", "node-ws"])
def test_one_process_holds_every_connection_and_each_broadcast_reaches_all(
    quick_run: tuple[dict[str, Any], str], server: str
) -> None:
    """
    Each server held all its connections, and each of the five broadcasts
    reached every one of them once, with a measured time and memory per
    connection.
    """
    result, _ = quick_run
    run = result["single"][server]
    assert run["connections"] == result["plan"]["connections"]
    assert len(run["broadcasts"]) == 5
    for broadcast in run["broadcasts"]:
        assert broadcast["received"] == run["connections"]
        assert broadcast["duplicates"] == 0
        assert broadcast["seconds"] > 0
    assert run["bytes_per_connection"] > 0


def test_cluso_reports_its_reactor_lag(quick_run: tuple[dict[str, Any], str]) -> None:
    """
    cluso-router's lag probe, read from router.stats, reported the worst
    stall while idle through ping sweeps and during the broadcasts; beside
    each server's idle window an idle timer process measured the machine's
    own lateness; the server's CPU time over each broadcast was taken.
    """
    result, _ = quick_run
    run = result["single"]["cluso-router"]
    assert run["idle_lag_ms"] is not None
    assert run["broadcast_lag_ms"] is not None
    for server in ("cluso-router", "node-ws"):
        measured = result["single"][server]
        assert measured["machine_lag_ms"] >= 0
        assert all(b["server_cpu_seconds"] >= 0 for b in measured["broadcasts"])


def test_workers_share_the_connections_and_every_broadcast(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    """
    Two workers over Redis held the connections, and every broadcast from
    one of them reached every connection once; the ratios to Node are
    printed.
    """
    result, stdout = quick_run
    run = result["workers"]
    assert run["workers"] == 2
    assert all(b["complete"] for b in run["broadcasts"])
    assert "against Node ws" in stdout
    assert result["limits"]["nofile_hard"] > 0
