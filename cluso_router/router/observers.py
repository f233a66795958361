"""
Telling interested parts that a registry changed.

The registries of procedures, channel claims and operations change while
the server runs (a source starts or stops, a WAMP client registers a
procedure); what describes them to clients (the MCP tool and resource
lists) learns of it through L{Observers}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

Observer = Callable[[], object]


class Observers:
    """
    Callbacks called with no arguments after each change; one that raises
    is logged and the others are still called.
    """

    log = Logger()

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        """
        Stop calling C{observer}; idempotent.
        """
        if observer in self._observers:
            self._observers.remove(observer)

    def notify(self) -> None:
        for observer in list(self._observers):
            try:
                observer()
            except Exception:
                self.log.failure("An observer of a registry change failed")
