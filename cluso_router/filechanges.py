"""
One place that announces file changes, so a change is announced once.

The files API knows about the changes it makes and says so at once; the
file watcher later sees the same change on disk. Both go through a
L{FileChangeLedger}: the API calls L{FileChangeLedger.changed}, the watcher
calls L{FileChangeLedger.observed}, which stays silent for a change the API
announced within the last C{window} seconds.
"""

from __future__ import annotations

from typing import Final

from twisted.internet.interfaces import IReactorTime

from ._reactor import default_reactor
from .event import DeliveryReport
from .events import EventBroadcaster, FileEvent

DEFAULT_WINDOW: Final = 2.0


class FileChangeLedger:
    def __init__(
        self,
        broadcaster: EventBroadcaster,
        clock: IReactorTime | None = None,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        self._broadcaster = broadcaster
        self._clock: IReactorTime = clock if clock is not None else default_reactor()
        self._window = window
        self._announced: dict[str, float] = {}

    def changed(self, path: str, event: FileEvent) -> DeliveryReport:
        """
        The server itself changed C{path} (root-relative, C{/}-separated):
        announce it now, and remember it so the watcher does not repeat it.
        """
        self._forget_old()
        self._announced[path] = self._clock.seconds()
        return self._broadcaster.file_changed(path, event)

    def observed(self, path: str, event: FileEvent) -> DeliveryReport | None:
        """
        The watcher saw C{path} change on disk: announce it unless the server
        announced a change of C{path} within the window.

        @return: the delivery report, or C{None} when it was already announced.
        """
        self._forget_old()
        if path in self._announced:
            return None
        return self._broadcaster.file_changed(path, event)

    def _forget_old(self) -> None:
        horizon = self._clock.seconds() - self._window
        for path in [p for p, at in self._announced.items() if at < horizon]:
            del self._announced[path]
