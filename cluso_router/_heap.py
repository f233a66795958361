"""
Keeping full garbage collections short in a long-running server.

Everything the process builds while it starts (modules, classes, the
service tree, the sources' state) lives until it exits, yet every full
collection walks all of it again. Connection storms make full collections
frequent: CPython runs one whenever the objects that survived young
collections grew by a quarter, so a server filling up with thousands of
connections runs a dozen, each holding the reactor for hundreds of
milliseconds. Moving what exists once the reactor runs into the
collector's permanent generation (C{gc.freeze}) takes it out of all of
them.

Only the C{twistd cluso} service and the C{cluso} command do this: an
application embedding the router owns its process and its collector.
"""

from __future__ import annotations

import gc

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorCore


class FreezeStartupHeap(Service):
    """
    Freezes the heap (L{gc.freeze}) once the reactor runs, when the
    services started before it have built what they keep.
    """

    name = "freeze-startup-heap"

    def __init__(self, reactor: IReactorCore) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(gc.freeze)
