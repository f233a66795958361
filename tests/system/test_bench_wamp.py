"""
The WAMP benchmark's quick mode against cluso-router alone (Crossbar is
not installed by the test run), so the benchmark keeps working: real
Autobahn subscribers and publisher, every event delivered once, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_delivers_everything(tmp_path: Path) -> None:
    """
    For JSON and msgpack, every subscriber got every event once and in
    order, and the router's CPU time per event was measured.
    """
    output = tmp_path / "quick.json"

    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "wamp.py"), "--quick", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=REPO,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads(output.read_text())
    runs = result["runs"]
    assert sorted(run["serializer"] for run in runs) == ["json", "msgpack"]
    for run in runs:
        assert run["router"] == "cluso"
        assert run["errors"] == 0, run
        assert run["deliveries"] == run["subscribers"] * run["events"]
        assert run["cpu_us_per_event"] >= 0
