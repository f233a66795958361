"""
One place that announces file changes, so a change is announced once.

The files API knows about the changes it makes and says so at once; the
file watcher later sees the same change on disk. Both go through a
L{FileChangeLedger}: the API calls L{FileChangeLedger.changed}, the watcher
calls L{FileChangeLedger.observed}, which stays silent for a change the API
announced within the last C{window} seconds.

Code in the same process that must react to file changes (a validator
running on change, a language server) registers a callback with
L{FileChangeLedger.add_observer}; it is called once for every change that
is announced, whichever side saw it first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cluso_router._reactor import default_reactor
from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport

DEFAULT_WINDOW: Final = 2.0

FileEvent = Literal["add", "change", "unlink", "addDir", "unlinkDir"]
FILE_EVENTS: Final = frozenset({"add", "change", "unlink", "addDir", "unlinkDir"})

FILES: Final = ChannelSpec(
    "files",
    "A file or directory under the root was added, changed or removed (chokidar's names)",
    schema={
        "type": "object",
        "required": ["file", "event", "timestamp"],
        "properties": {
            "file": {"type": "string", "description": "Relative to the root, / separated"},
            "event": {"type": "string", "enum": sorted(FILE_EVENTS)},
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=({"file": "src/main.ts", "event": "change", "timestamp": "2024-12-09T15:30:45.123Z"},),
)


def file_changed(broadcaster: Broadcaster, file: str, event: FileEvent) -> DeliveryReport:
    """
    Publish on C{files} that C{file} (root-relative, C{/}-separated) was
    added, changed or removed; the original server's C{fileChanged}.
    """
    if event not in FILE_EVENTS:
        raise ValueError(f"unknown file event {event!r}")
    return broadcaster.emit_stamped(FILES.channel, {"file": file, "event": event})


FileChangeObserver = Callable[[str, FileEvent], object]


class FileChangeLedger:
    log = Logger()

    def __init__(
        self,
        broadcaster: Broadcaster,
        clock: IReactorTime | None = None,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        self._broadcaster = broadcaster
        self._clock: IReactorTime = clock if clock is not None else default_reactor()
        self._window = window
        self._announced: dict[str, float] = {}
        self._observers: list[FileChangeObserver] = []

    def add_observer(self, observer: FileChangeObserver) -> None:
        """
        Call C{observer(path, event)} on the reactor thread after each
        announced change; an exception it raises is logged and ignored.
        """
        self._observers.append(observer)

    def remove_observer(self, observer: FileChangeObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def changed(self, path: str, event: FileEvent) -> DeliveryReport:
        """
        The server itself changed C{path} (root-relative, C{/}-separated):
        announce it now, and remember it so the watcher does not repeat it.
        """
        self._forget_old()
        self._announced[path] = self._clock.seconds()
        return self._announce(path, event)

    def observed(self, path: str, event: FileEvent) -> DeliveryReport | None:
        """
        The watcher saw C{path} change on disk: announce it unless the server
        announced a change of C{path} within the window.

        @return: the delivery report, or C{None} when it was already announced.
        """
        self._forget_old()
        if path in self._announced:
            return None
        return self._announce(path, event)

    def _announce(self, path: str, event: FileEvent) -> DeliveryReport:
        report = file_changed(self._broadcaster, path, event)
        for observer in list(self._observers):
            try:
                observer(path, event)
            except Exception:
                self.log.failure(
                    "File change observer {observer!r} failed on {path}",
                    observer=observer,
                    path=path,
                )
        return report

    def _forget_old(self) -> None:
        horizon = self._clock.seconds() - self._window
        for path in [p for p, at in self._announced.items() if at < horizon]:
            del self._announced[path]
