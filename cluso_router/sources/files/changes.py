"""
From "something happened to this path" to one chokidar event per path.

Watchdog reports what the kernel saw: several writes of one save, an
editor's temporary file renamed over the real one, a directory's children
one by one. L{ChangeTracker} waits until a path has been quiet for a short
delay, then compares the path on disk with what it knew before the burst,
and announces the net effect: C{add}, C{change}, C{unlink}, C{addDir},
C{unlinkDir}, or nothing at all (a temporary file that came and went).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from cluso_router.router.broadcaster import Burst
from cluso_router.sources.files.ignore import IgnoreRules
from cluso_router.sources.files.scan import Snapshot, Stat, stat_path
from cluso_router.workspace.ledger import FileEvent

#: Seconds a path must stay quiet before its change is announced.
DEFAULT_DELAY: Final = 0.05
#: A path written without pause is still announced this often (seconds).
DEFAULT_MAX_DELAY: Final = 1.0

Announce = Callable[[str, FileEvent], object]


class ChangeTracker:
    """
    The last known state of every watched path, and the paths touched since.

    Lives on the reactor thread; time comes from the injected clock.

    @ivar index: the state last announced (or first seen) of each path.
    @ivar rules: paths these rules leave out are dropped without a word.
    """

    def __init__(
        self,
        root: str,
        announce: Announce,
        clock: IReactorTime,
        rules: IgnoreRules,
        delay: float = DEFAULT_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        burst: Burst = nullcontext,
    ) -> None:
        self.root = root
        self.rules = rules
        self.index: dict[str, Stat] = {}
        self._announce = announce
        self._burst = burst
        self._clock = clock
        self._delay = delay
        self._max_delay = max(delay, max_delay)
        self._pending: dict[str, tuple[float, float]] = {}
        self._timer: IDelayedCall | None = None
        self._active = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def load(self, snapshot: Snapshot) -> None:
        """
        Take C{snapshot} as the known state without announcing anything, and
        start announcing the paths touched from now on.
        """
        self.index = dict(snapshot.entries)
        self.resume()

    def resume(self) -> None:
        self._active = True
        self._schedule()

    def pause(self) -> None:
        """
        Stop announcing and forget touched paths; the index is kept, so a
        later L{reconcile} reports what changed meanwhile.
        """
        self._active = False
        self._pending.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def touch(self, path: str) -> None:
        """
        C{path} may have changed: announce its net change once it has been
        quiet for the delay (or touched for the maximum delay).
        """
        now = self._clock.seconds()
        first = self._pending[path][0] if path in self._pending else now
        deadline = min(now + self._delay, first + self._max_delay)
        self._pending[path] = (first, deadline)
        if self._active:
            self._schedule_at(deadline)

    def reconcile(self, snapshot: Snapshot, under: str = "") -> None:
        """
        Announce every difference between the index and C{snapshot} of the
        tree below C{under}.

        Differing paths are touched, not settled at once, so a file the scan
        caught half-written and the watch then saw finished is one event.
        """
        prefix = under + "/" if under else ""
        paths = set(snapshot.entries)
        paths.update(p for p in self.index if p.startswith(prefix))
        for path in sorted(paths):
            if self.index.get(path) != snapshot.entries.get(path):
                self.touch(path)

    def forget(self, path: str) -> None:
        """
        Drop C{path} and everything below it without announcing anything.
        """
        self.index.pop(path, None)
        self._pending.pop(path, None)
        for child in self._descendants(path):
            del self.index[child]
            self._pending.pop(child, None)

    def settle(self, path: str) -> None:
        """
        Compare C{path} on disk with the index and announce the difference.
        """
        before = self.index.get(path)
        now = stat_path(os.path.join(self.root, path))
        if now is not None and self.rules.ignored(path, now[0]):
            self.forget(path)
            return
        if before == now:
            return
        if before is not None and now is not None and before[0] == now[0]:
            self.index[path] = now
            if not now[0]:
                self._announce(path, "change")
            return
        if before is not None:
            self._remove(path, before[0])
        if now is not None:
            self._add(path, now)

    def _add(self, path: str, now: Stat) -> None:
        parent = path.rpartition("/")[0]
        if parent and parent not in self.index:
            self._pending.pop(parent, None)
            self.settle(parent)
        self.index[path] = now
        self._announce(path, "addDir" if now[0] else "add")

    def _remove(self, path: str, is_dir: bool) -> None:
        if is_dir:
            for child in sorted(self._descendants(path), reverse=True):
                was_dir = self.index.pop(child)[0]
                self._pending.pop(child, None)
                self._announce(child, "unlinkDir" if was_dir else "unlink")
        del self.index[path]
        self._announce(path, "unlinkDir" if is_dir else "unlink")

    def _descendants(self, path: str) -> Iterable[str]:
        prefix = path + "/"
        return [p for p in self.index if p.startswith(prefix)]

    def _schedule(self) -> None:
        if self._active and self._pending:
            self._schedule_at(min(d for _, d in self._pending.values()))

    def _schedule_at(self, deadline: float) -> None:
        """
        Make the timer fire by C{deadline}; it always fires no later than
        the earliest pending deadline.
        """
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= deadline:
                return
            timer.cancel()
        self._timer = self._clock.callLater(max(0.0, deadline - self._clock.seconds()), self._fire)

    def _fire(self) -> None:
        """
        Settle every path whose deadline passed, in path order (a directory
        before its children) and as one burst (a checkout's hundreds of
        changes reach each subscriber in one write), then wait for the next deadline, at least a
        fraction of the delay later so a long burst costs few timer rounds.
        """
        self._timer = None
        now = self._clock.seconds()
        due = []
        later = None
        for path, (_, deadline) in self._pending.items():
            if deadline <= now + 1e-9:
                due.append(path)
            elif later is None or deadline < later:
                later = deadline
        for path in due:
            del self._pending[path]
        with self._burst():
            for path in sorted(due):
                self.settle(path)
        if self._active and later is not None and self._pending:
            self._schedule_at(max(later, now + self._delay / 4))
