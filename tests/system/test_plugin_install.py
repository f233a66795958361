"""
A third-party event source, installed the documented way: the example
package in docs/plugins.md is built and installed with pip into a temporary
directory put on PYTHONPATH, next to a dropin that fails to import and one
whose source fails to start; the real C{twistd cluso} then lists, runs and
survives them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.servers import list_sources, start_twistd, stop_child_server
from twisted.internet import reactor
from twisted.internet.task import deferLater

from cluso_router.testing import connect_client

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"

BROKEN_DROPIN = "import cluso_no_such_module  # noqa\n"

FAILING_DROPIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from cluso_router.interfaces import IEventSourceFactory


@implementer(IPlugin, IEventSourceFactory)
class Failing:
    name = "failing"
    description = "Always fails to start."
    options = []

    def applies_to(self, root):
        return False

    def make_source(self, context):
        raise RuntimeError("this source cannot start")


failing = Failing()
"""


def documented_files() -> dict[str, str]:
    """
    The code blocks of docs/plugins.md that start with a '# <path>' line.
    """
    blocks = re.findall(r"```(?:python|toml)\n# (\S+)\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return {path: body for path, body in blocks}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The documented example package, pip-installed into a directory of its
    own, plus two misbehaving dropins beside its dropin.
    """
    files = documented_files()
    assert set(files) == {
        "cluso_heartbeat/__init__.py",
        "cluso_plugins/cluso_heartbeat_plugin.py",
        "pyproject.toml",
    }
    base = tmp_path_factory.mktemp("plugin")
    package = base / "cluso-heartbeat"
    for path, text in files.items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(text)
    target = base / "site"
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
    (dropins / "cluso_failing.py").write_text(FAILING_DROPIN)
    return target


def test_list_sources_shows_the_installed_plugin_and_the_broken_one(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    twistd cluso --list-sources lists the installed heartbeat source (off
    by default, with its options) beside the built-in ones, and reports the
    dropin that failed to import with its error.
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
    assert names["failing"] == "off"
    assert names["files"] == "on"
    assert any("--heartbeat-interval=5.0" in line for line in lines)
    assert any(line.strip().startswith("--heartbeat-verbose  Log every beat.") for line in lines)
    problems = lines[lines.index("Problems:") + 1 :]
    assert any(
        "cluso_broken.py" in p and "ModuleNotFoundError" in p and "cluso_no_such_module" in p
        for p in problems
    ), problems


@pytest_twisted.ensureDeferred
async def test_installed_plugin_runs_beside_a_failing_one(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    twistd cluso --sources files,heartbeat,failing runs the installed source
    with its options (events on its channel, its procedure answering, file
    changes reaching it through the ledger's observer hook), while the
    failing source is logged and left out.
    """
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(site))
    child = start_twistd(
        root,
        "--sources",
        "files,heartbeat,failing",
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
        await client.close()
    finally:
        stop_child_server(child)
    log = "".join(child.log) + (child.process.stdout.read() if child.process.stdout else "")
    assert "Event source failing failed to start; the server runs without it" in log
    assert "this source cannot start" in log
    assert "Event source heartbeat started" in log
    assert "Beat 1" in log
