"""
The fan-out benchmark's quick mode, so the benchmark keeps working: it starts
cluso-router and both baselines as real processes, drives them with the Node
load client, and every event must reach every subscriber once, in order.
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
SERVERS = ("cluso-router", "naive-autobahn", "node-ws")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; the fan-out benchmark needs Node.js and npm")
    output = tmp_path_factory.mktemp("fanout") / "quick.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fanout.py"), "--quick", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(output.read_text()), completed.stdout


@pytest.mark.parametrize("server", SERVERS)
def test_every_event_reaches_every_subscriber(
    quick_run: tuple[dict[str, Any], str], server: str
) -> None:
    """
    For each server, in each of the two alternating rounds, every throughput
    and fixed-rate run delivered each event exactly once, in order, to each
    of its N subscribers.
    """
    result, _ = quick_run
    rounds = [r for r in result["rounds"] if r["server"] == server]
    assert len(rounds) == 2
    runs = [run for r in rounds for run in r["runs"]]
    throughput_sizes = sorted(run["n"] for run in runs if run["kind"] == "throughput")
    assert throughput_sizes == sorted(result["plan"]["sizes"] * 2)
    assert [run["kind"] for run in runs].count("rate") == 2
    burst_sizes = sorted(run["burst"] for run in runs if run["kind"] == "burst")
    assert burst_sizes == sorted(result["plan"]["bursts"] * 2)
    for run in runs:
        assert run["deliveries"] == run["n"] * run["events"], run
        assert (run["duplicates"], run["gaps"], run["missing"], run["complete"]) == (
            0,
            0,
            0,
            True,
        ), run


@pytest.mark.parametrize("server", SERVERS)
def test_measurements_are_reported(quick_run: tuple[dict[str, Any], str], server: str) -> None:
    """
    Each server gets a rate, CPU use per delivery, latencies and memory per
    connection measured from its own process.
    """
    result, _ = quick_run
    summary = result["summary"]
    for n in result["plan"]["sizes"]:
        measured = summary["throughput"][server][str(n)]
        assert measured["deliveries_per_second"] > 0
        assert measured["server_cpu_per_million"] >= 0
        assert 0 <= measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
    assert summary["rate"][server]["p99_ms"] > 0
    assert summary["memory"][server]["rss_start"] > 1_000_000


def test_report_prints_ratios(quick_run: tuple[dict[str, Any], str]) -> None:
    """
    The printed report ends with cluso-router's ratios against both
    baselines, and the JSON summary carries the same ratios.
    """
    result, stdout = quick_run
    assert "vs node-ws" in stdout
    assert "vs naive-autobahn" in stdout
    ratios = result["summary"]["ratios"]
    assert set(ratios) == {"node-ws", "naive-autobahn"}
    for peer in ratios.values():
        for by_n in peer["by_n"].values():
            assert by_n["deliveries_per_second"] > 0


@pytest.mark.parametrize("server", SERVERS)
def test_bursts_are_measured_per_size(quick_run: tuple[dict[str, Any], str], server: str) -> None:
    """
    For each burst size B, each server's burst runs delivered every event
    once and in order, and report deliveries per second, the server's and
    the load client's CPU per delivery, and the time from a burst's write
    to its last receipt (p50 at most p99).
    """
    result, stdout = quick_run
    assert "Bursts: B events in one write" in stdout
    for size in result["plan"]["bursts"]:
        measured = result["summary"]["bursts"][server][str(size)]
        assert measured["complete"] is True
        assert measured["runs"] == 2
        assert measured["deliveries_per_second"] > 0
        assert measured["server_cpu_per_million"] >= 0
        assert measured["client_cpu_per_million"] >= 0
        assert 0 < measured["burst_p50_ms"] <= measured["burst_p99_ms"]
    if server == "cluso-router":
        for peer in ("node-ws", "naive-autobahn"):
            for ratios in result["summary"]["ratios"][peer]["by_burst"].values():
                assert ratios["deliveries_per_second"] > 0
