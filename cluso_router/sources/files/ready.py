"""
Waiting for a watcher to be ready.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Waiters:
    """
    The callers of a watcher's C{when_ready} that came before it was ready:
    each is given a Deferred, and all of them fire together with the outcome.
    """

    def __init__(self) -> None:
        self._waiting: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def fire(self, result: Failure | None) -> None:
        """
        Fire every Deferred given out so far: with C{None}, or failed with
        C{result}.
        """
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if result is None:
                d.callback(None)
            else:
                d.errback(result)
