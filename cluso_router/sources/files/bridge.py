"""
The one crossing from watchdog's thread to the reactor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

Accept = Callable[[str, bool], bool]
Deliver = Callable[[list[str]], object]


class ThreadBridge(FileSystemEventHandler):
    """
    A watchdog event handler: runs in watchdog's thread, turns each event
    into the paths it touched (relative to C{base}, C{/}-separated), drops
    those C{accept} refuses, and hands the rest to C{deliver} on the reactor
    thread in batches, only through C{reactor.callFromThread}.

    A burst of events costs one C{callFromThread} per batch the reactor
    takes, not one per event.
    """

    def __init__(self, reactor: Any, base: str, accept: Accept, deliver: Deliver) -> None:
        self._reactor = reactor
        self._prefix = os.path.join(base, "")
        self._accept = accept
        self._deliver = deliver
        self._lock = threading.Lock()
        self._batch: list[str] = []

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return
        touched = [event.src_path]
        if event.event_type == EVENT_TYPE_MOVED:
            touched.append(event.dest_path)
        paths = []
        for raw in touched:
            path = os.fsdecode(raw)
            if not path.startswith(self._prefix):
                continue
            relative = path[len(self._prefix) :].replace(os.sep, "/")
            if relative and self._accept(relative, event.is_directory):
                paths.append(relative)
        if not paths:
            return
        with self._lock:
            wake = not self._batch
            self._batch.extend(paths)
        if wake:
            self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, []
        if batch:
            self._deliver(batch)


def stop_observer(observer: BaseObserver) -> None:
    """
    In a thread of the pool: stop watchdog's observer and wait until its
    thread has ended, so no event crosses after the service stopped.
    """
    observer.stop()
    observer.join()
