"""
Coalescing a burst into one write per connection.

Sending each event to each subscriber with its own C{send} puts the
kernel's per-call cost on every delivery: at a thousand subscribers a
burst of a hundred events is a hundred thousand system calls. The
L{WriteCoalescer} lets a session join the frames one burst gives it, in
two ways:

 - inside an explicit batch (L{WriteCoalescer.batch}: one inbound read,
   L{cluso_router.router.router.Router.publish_many}) every frame gathers
   and each session writes once when the batch ends;
 - outside any batch, a session's first frame in a reactor turn leaves at
   once (a lone event gets no added latency) and the rest of that turn's
   frames gather until the turn ends (a C{callLater(0)}), when each session
   writes them in one go.

The router never touches sockets; sessions ask the coalescer whether to
gather (L{WriteCoalescer.gathering}) and hand it themselves to be flushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Bytes a session gathers before it writes them anyway, batch or not.
MAX_GATHERED_BYTES: Final = 256 * 1024


class Flushable(Protocol):
    """
    A session that gathered frames and sends them when told.
    """

    def flush(self) -> None: ...


class WriteCoalescer:
    """
    Tracks reactor turns and explicit batches for the sessions of one
    router. Without a clock, turns are not tracked (every frame outside a
    batch leaves at once), which is what a session built on its own in a
    test gets.

    @ivar turn: a number identifying the current reactor turn; a session
        that wrote directly remembers it, and gathers while it is current.
    @ivar depth: how many L{batch} scopes are open.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self.timed = clock is not None
        self.turn = 0
        self.depth = 0
        self._gathered: list[Flushable] = []
        self._end_of_turn: IDelayedCall | None = None
        #: Writes saved: frames that joined another frame's write.
        self.joined = 0

    @contextmanager
    def batch(self) -> Iterator[None]:
        """
        While inside, sessions gather every frame; on leaving the outermost
        scope each one writes what it gathered, in order, before anything
        else runs.
        """
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth:
                self.flush()

    def wrote_directly(self) -> None:
        """
        A session wrote a frame at once in this turn: make sure the turn
        ends (and frames gathered after it leave) on the next reactor pass.
        """
        if self._end_of_turn is None and self._clock is not None:
            self._end_of_turn = self._clock.callLater(0, self._next_turn)

    def gathered(self, session: Flushable) -> None:
        """
        C{session} started gathering; it is flushed when the batch or, outside
        one, the turn ends.
        """
        self._gathered.append(session)
        if not self.depth:
            self.wrote_directly()

    def flush(self) -> None:
        """
        Send what every session gathered.
        """
        sessions, self._gathered = self._gathered, []
        for session in sessions:
            try:
                session.flush()
            except Exception:
                self.log.failure("Flushing a session's gathered frames failed")

    def _next_turn(self) -> None:
        self._end_of_turn = None
        self.turn += 1
        self.flush()

    def stop(self) -> None:
        """
        Flush now and stop tracking turns (the router is stopping).
        """
        if self._end_of_turn is not None and self._end_of_turn.active():
            self._end_of_turn.cancel()
        self._end_of_turn = None
        self.turn += 1
        self.flush()


#: What a session built without a router's coalescer uses: batches work,
#: turns are not tracked.
UNTIMED: Final = WriteCoalescer()
