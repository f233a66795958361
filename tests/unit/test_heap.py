"""
The C{twistd cluso} service freezes the heap it built while starting, so
that full collections during connection storms skip it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluso_router._heap import FreezeStartupHeap
from cluso_router.tap import Options, makeService


class NotYetRunning:
    """
    A reactor that has not started: what is to run once it does waits.
    """

    def __init__(self) -> None:
        self.waiting: list[Callable[[], Any]] = []

    def callWhenRunning(self, f: Callable[[], Any]) -> None:
        self.waiting.append(f)

    def run(self) -> None:
        for f in self.waiting:
            f()


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_once_the_reactor_runs(unfrozen: None) -> None:
    """
    Starting the service freezes nothing yet; when the reactor runs, every
    object then tracked moves to the permanent generation.
    """
    reactor = NotYetRunning()
    FreezeStartupHeap(reactor).startService()  # type: ignore[arg-type]
    assert gc.get_freeze_count() == 0
    reactor.run()
    assert gc.get_freeze_count() > 1000


def test_the_command_line_service_freezes_the_startup_heap(tmp_path: Path) -> None:
    """
    The service C{twistd cluso} and C{cluso} run includes the freeze.
    """
    options = Options()
    options.parseOptions(["--root", str(tmp_path), "--sources", ""])
    service: Any = makeService(options)
    assert isinstance(service.getServiceNamed("freeze-startup-heap"), FreezeStartupHeap)
