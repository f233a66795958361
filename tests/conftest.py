"""
Fixtures and test tiers.

Each test gets the marker of the folder it lives in: C{unit} (in memory:
fakes, C{task.Clock}, C{StringTransport}), C{integration} (real sockets and
child processes of this process's server) or C{system} (C{twistd cluso}
children, Redis, Chromium, Node.js, benchmarks). C{pytest -m unit} is the
fast tier to run while working.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.servers import (
    TEST_TOKEN,
    ChildServer,
    serve,
    start_twistd,
    stop_child_server,
)

TIERS = ("unit", "integration", "system")


@pytest.fixture(autouse=True)
def private_data_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """
    Point C{XDG_DATA_HOME} (where servers keep backups by default) at a
    fresh directory for every test, so no test, and no server it starts in
    this process or as a child, writes into the user's data directory.
    """
    data_home = tmp_path_factory.mktemp("data-home")
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    return data_home


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        tier = next((part for part in reversed(parts) if part in TIERS), None)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid} is outside tests/unit, integration, system")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True, scope="session")
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """
    Every test, and every server it starts, keeps its per-user state (the
    token kept across restarts) in a temporary C{XDG_STATE_HOME}, never in
    the real home directory.
    """
    state = tmp_path_factory.mktemp("xdg-state")
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield state
    if saved is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> Any:
    """
    A whole cluso-router service in this process, listening on a free
    loopback port, with auth off.
    """
    async for running in serve(tmp_path, auth="none"):
        yield running


@pytest_twisted.async_yield_fixture
async def secured_server(tmp_path: Path) -> Any:
    """
    Like C{server}, with token auth on as by default; the token is
    L{TEST_TOKEN}.
    """
    async for running in serve(tmp_path, token=TEST_TOKEN):
        yield running


@pytest.fixture
def twistd_server(tmp_path: Path) -> Iterator[ChildServer]:
    """
    The real C{twistd -n cluso} in a child process, rooted at a fresh directory.
    """
    root = tmp_path / "root"
    root.mkdir()
    child = start_twistd(root)
    yield child
    stop_child_server(child)
