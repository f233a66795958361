"""
A third-party event source, installed the documented way: the example
package in docs/plugins.md is built and installed with pip into a temporary
directory put on PYTHONPATH, next to a dropin that fails to import, one
whose source fails to start, one whose source fails to stop, and one that
declares an option name the example already uses. The real server then
lists, runs and survives them, and the documented tests of the example pass
with pytest and with trial.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.servers import list_sources, python_tool, start_twistd, stop_child_server
from twisted.internet import reactor
from twisted.internet.task import deferLater

from cluso_router.testing import connect_client

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"

BROKEN_DROPIN = "import cluso_no_such_module  # noqa\n"

MISBEHAVING_DROPIN = """
from twisted.internet import defer
from twisted.python import usage

from cluso_router.sources import SourceOptions, SourcePlugin, SourceService


class FailsToStart(SourceService):
    async def startSource(self):
        await defer.succeed(None)
        raise RuntimeError("this source cannot start")


class FailsToStop(SourceService):
    def stopSource(self):
        raise RuntimeError("this source cannot stop")


class Intruding(SourceOptions):
    optParameters = [["period", None, 1.0, "Also beats.", float]]
    aliases = {"heartbeat-interval": "period"}


failing = SourcePlugin(
    name="failing",
    description="Always fails to start.",
    service="cluso_plugins.cluso_misbehaving.FailsToStart",
    applies=lambda root: False,
)
stubborn = SourcePlugin(
    name="stubborn",
    description="Always fails to stop.",
    service="cluso_plugins.cluso_misbehaving.FailsToStop",
    applies=lambda root: False,
)
intruder = SourcePlugin(
    name="intruder",
    description="Claims the heartbeat's option name.",
    service="cluso_plugins.cluso_misbehaving.FailsToStop",
    options=Intruding,
    applies=lambda root: False,
)
"""

EXPECTED_FILES = {
    "cluso_heartbeat/__init__.py",
    "cluso_plugins/cluso_heartbeat_plugin.py",
    "pyproject.toml",
    "tests/test_heartbeat.py",
    "tests/test_heartbeat_trial.py",
}


def documented_files() -> dict[str, str]:
    """
    The code blocks of docs/plugins.md that start with a '# <path>' line.
    """
    blocks = re.findall(r"```(?:python|toml)\n# (\S+)\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return {path: body for path, body in blocks}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The documented example package, as its author would have it.
    """
    files = documented_files()
    assert set(files) == EXPECTED_FILES
    package = tmp_path_factory.mktemp("plugin") / "cluso-heartbeat"
    for path, text in files.items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(text)
    return package


@pytest.fixture(scope="module")
def site(package: Path) -> Path:
    """
    The example package pip-installed the documented way into a directory
    of its own, plus the misbehaving dropins beside its dropin.
    """
    target = package.parent / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dropins = target / "cluso_plugins"
    assert (dropins / "cluso_heartbeat_plugin.py").exists()
    assert not (dropins / "__init__.py").exists()
    (dropins / "cluso_broken.py").write_text(BROKEN_DROPIN)
    (dropins / "cluso_misbehaving.py").write_text(MISBEHAVING_DROPIN)
    return target


def test_list_sources_and_help_show_the_plugin_and_its_options(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    --list-sources lists the installed heartbeat source (off by default)
    with its options under its prefix, exactly as docs/plugins.md shows
    them, reports the dropin that failed to import in one line and the
    clashing option name; --help offers the prefixed options.
    """
    monkeypatch.setenv("PYTHONPATH", str(site))
    out = list_sources(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    names = {
        line.split()[0]: line.split()[1]
        for line in lines
        if line.startswith("  ") and line.split()[1] in ("on", "off")
    }
    assert names["heartbeat"] == "off"
    assert names["files"] == "on"
    documented = re.search(r"\$ cluso --list-sources\n(.*?)```", DOCS.read_text(), re.S)
    assert documented is not None
    shown = [" ".join(line.split()) for line in lines]
    for line in documented.group(1).splitlines():
        if "heartbeat" in line or "--files-watch-delay" in line:
            assert " ".join(line.split()) in shown, line
    problems = lines[lines.index("Problems:") + 1 :]
    broken = [p for p in problems if "cluso_broken.py" in p]
    assert len(broken) == 1
    assert "ModuleNotFoundError" in broken[0]
    assert "cluso_no_such_module" in broken[0]
    assert any("--heartbeat-interval is declared by heartbeat, intruder" in p for p in problems)
    assert "Traceback" not in out.stdout + out.stderr
    assert "Unhandled Error" not in out.stdout + out.stderr

    help_text = subprocess.run(
        [python_tool("cluso"), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--heartbeat-interval=" in help_text
    assert "--heartbeat-verbose" in help_text


def test_two_plugins_with_one_option_name_cannot_start_together(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Running the heartbeat with the plugin that also declares
    --heartbeat-interval fails at start with one line naming both.
    """
    monkeypatch.setenv("PYTHONPATH", str(site))
    result = subprocess.run(
        [python_tool("cluso"), "--root", str(tmp_path), "--sources", "heartbeat,intruder"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--heartbeat-interval is declared by source heartbeat and source intruder" in (
        result.stderr
    )


@pytest_twisted.ensureDeferred
async def test_installed_plugin_runs_beside_failing_ones(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The server runs the installed source with its options (events on its
    channel, its procedure and route answering, file changes reaching it
    through the ledger's observer hook). A source failing to start is
    logged once and named by /api/health; one failing to stop is logged
    once at shutdown; the server runs on.
    """
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(site))
    child = start_twistd(
        root,
        "--sources",
        "files,heartbeat,failing,stubborn",
        "--heartbeat-interval",
        "0.2",
        "--heartbeat-verbose",
    )
    try:
        client = await connect_client(child.ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "heartbeat", "id": 1})
        beat = await client.next_message(timeout=15)
        assert beat["type"] == "event"
        assert beat["channel"] == "heartbeat"
        assert beat["data"]["interval"] == 0.2
        assert beat["data"]["beats"] >= 1
        refused = await client.request({"type": "send", "channel": "heartbeat", "data": 1, "id": 2})
        assert refused["code"] == "forbidden_channel"

        status: Any = None
        deadline = time.monotonic() + 20
        probe = 0
        while time.monotonic() < deadline:
            probe += 1
            (root / f"probe-{probe}.txt").write_text("probe")
            await deferLater(reactor, 0.5, lambda: None)
            reply = await client.request(
                {"type": "invoke", "id": 100 + probe, "channel": "heartbeat.status"}
            )
            status = reply["data"]
            if status["changes"]:
                break
        assert status is not None
        assert status["changes"]
        assert all(re.fullmatch(r"add probe-\d+\.txt", c) for c in status["changes"])
        with urllib.request.urlopen(child.url + "api/heartbeat", timeout=10) as response:
            assert json.load(response)["data"]["interval"] == 0.2
        health = child.health()
        assert health["status"] == "degraded"
        assert health["problems"] == {
            "source failing": "failed to start: RuntimeError: this source cannot start"
        }
        await client.close()
    finally:
        stop_child_server(child)
    log = "".join(child.log) + (child.process.stdout.read() if child.process.stdout else "")
    assert log.count("Event source failing failed to start") == 1
    assert log.count("RuntimeError: this source cannot start") == 1
    assert log.count("Event source stubborn failed to stop cleanly") == 1
    assert "Event source heartbeat started" in log
    assert "Beat 1" in log


def test_the_documented_tests_pass_with_pytest_and_trial(
    site: Path, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The example's own tests, as docs/plugins.md shows them, pass against
    the installed plugin: the pytest one and the trial one.
    """
    monkeypatch.setenv("PYTHONPATH", str(site))
    pytest_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_heartbeat.py"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pytest_run.returncode == 0, pytest_run.stdout + pytest_run.stderr
    trial_run = subprocess.run(
        [sys.executable, "-m", "twisted.trial", "test_heartbeat_trial"],
        cwd=package / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trial_run.returncode == 0, trial_run.stdout + trial_run.stderr
    assert "PASSED" in trial_run.stdout
