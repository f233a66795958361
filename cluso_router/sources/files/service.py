"""
The C{files} source: a watchdog observer on the root whose changes are
announced through the server's L{FileChangeLedger}.

Watches are placed on the root itself and on each of its directories that
is not ignored, so an ignored top-level directory (C{node_modules}, a
virtualenv, a C{.gitignore}d C{build/}) costs no kernel watches at all.
Everything blocking (placing watches, walking the tree, joining threads)
runs in the reactor's thread pool, one job at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from cluso_router.router.broadcaster import Burst
from cluso_router.router.procedures import ProcedureError
from cluso_router.sources.context import SourceContext
from cluso_router.sources.files.bridge import ThreadBridge, stop_observer
from cluso_router.sources.files.changes import DEFAULT_DELAY, Announce, ChangeTracker
from cluso_router.sources.files.ignore import VIRTUALENV_MARKER, IgnoreRules
from cluso_router.sources.files.ready import Waiters
from cluso_router.sources.files.scan import Snapshot, scan
from cluso_router.sources.lifecycle import SourceService
from cluso_router.workspace.ledger import FILES, FileEvent

#: Watchdog events that can mean a path was added, changed or removed.
WATCHED_EVENTS: Final[list[type[FileSystemEvent]]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
]

PROCEDURES: Final = ("fileWatcher.start", "fileWatcher.stop", "fileWatcher.getWatched")

_T = TypeVar("_T")


class FileWatcher(Service):
    """
    Watches the root and announces each net change of a path once.

    @ivar tracker: the known state of the tree and the pending changes.
    @ivar watching: whether the root is being watched (C{fileWatcher.stop}
        pauses watching without stopping the service).
    """

    log = Logger()

    def __init__(
        self,
        root: str,
        announce: Announce,
        reactor: Any,
        ignore: Sequence[str] = (),
        delay: float = DEFAULT_DELAY,
        observer_factory: Callable[[], BaseObserver] = Observer,
        burst: Burst = contextlib.nullcontext,
    ) -> None:
        self.root = os.path.realpath(root)
        self._announce = announce
        self._reactor = reactor
        self._extra_ignore = tuple(ignore)
        self._observer_factory = observer_factory
        self.tracker = ChangeTracker(
            self.root,
            self._announced,
            reactor,
            IgnoreRules.load(self.root, ignore),
            delay,
            burst=burst,
        )
        self.watching = False
        self._observer: BaseObserver | None = None
        self._handler = ThreadBridge(reactor, self.root, self._accept, self._touched)
        self._watches: dict[str, ObservedWatch] = {}
        self._jobs = DeferredLock()
        self._loaded = False
        self._ready = False
        self._waiters = Waiters()
        self._rescanning = False
        self._alarm = OverflowAlarm(reactor, self.rescan)

    # service

    def startService(self) -> None:
        super().startService()
        self._observer = self._observer_factory()
        self._observer.start()
        self._alarm.install()
        self.start_watching().addErrback(lambda _: None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._alarm.uninstall()
        self.stop_watching()
        observer, self._observer = self._observer, None
        if observer is None:
            return succeed(None)
        return self._in_thread(stop_observer, observer)

    # watching

    def when_ready(self) -> Deferred[None]:
        """
        Fires once the watches are in place and the tree has been read (at
        once if that is already so, or when watching is stopped first);
        fails if watching could not start.
        """
        if self._ready:
            return succeed(None)
        return self._waiters.wait()

    def start_watching(self) -> Deferred[None]:
        """
        Place the watches and read the tree. The first time, what is there
        is taken as it is; after L{stop_watching}, what changed meanwhile is
        announced.
        """
        if not self.watching:
            self.watching = True
            started = self._reactor.seconds()
            d = self._in_thread(self._watch_tree, self.tracker.rules)
            d.addCallbacks(self._watch_started, self._watch_failed, callbackArgs=(started,))
        return self.when_ready()

    def stop_watching(self) -> Deferred[None]:
        if not self.watching:
            return succeed(None)
        self.watching = False
        self._ready = False
        self.tracker.pause()
        self._waiters.fire(None)
        return self._in_thread(self._unwatch_all)

    def rescan(self) -> None:
        """
        Read the whole tree again and announce what differs from what is
        known: the remedy when the kernel dropped events.
        """
        if not self._ready or self._rescanning:
            return
        self._rescanning = True
        self.log.warn("File watcher: events may have been lost; rescanning {root}", root=self.root)

        def rescanned(snapshot: Snapshot) -> None:
            if self._ready:
                self._adopt_virtualenvs(snapshot)
                self.tracker.reconcile(snapshot)

        def done(_: object) -> None:
            self._rescanning = False

        d = self._in_thread(scan, self.root, self.tracker.rules)
        d.addCallback(rescanned)
        d.addErrback(self._log_failure, "rescan")
        d.addBoth(done)

    def _watch_tree(self, rules: IgnoreRules) -> Snapshot:
        """
        In a thread: watch the root, then each directory in it, reading each
        part of the tree after its watch is in place so nothing falls between.
        """
        self._watches[""] = self._schedule(self.root, recursive=False)
        snapshot = scan(self.root, rules, recursive=False)
        for name, entry in list(snapshot.entries.items()):
            if entry[0]:
                self._watch_directory(name, rules, snapshot)
        return snapshot

    def _watch_directory(self, name: str, rules: IgnoreRules, into: Snapshot) -> bool:
        try:
            self._watches[name] = self._schedule(os.path.join(self.root, name), recursive=True)
        except OSError:
            return False
        into.update(scan(self.root, rules, name))
        return True

    def _schedule(self, path: str, recursive: bool) -> ObservedWatch:
        assert self._observer is not None
        return self._observer.schedule(
            self._handler, path, recursive=recursive, event_filter=WATCHED_EVENTS
        )

    def _unwatch_all(self) -> None:
        if self._observer is not None:
            self._observer.unschedule_all()
        self._watches.clear()

    def _watch_started(self, snapshot: Snapshot, started: float) -> None:
        if not self.watching:
            return
        self._adopt_virtualenvs(snapshot)
        if self._loaded:
            self.tracker.reconcile(snapshot)
            self.tracker.resume()
        else:
            self.tracker.load(snapshot)
            self._loaded = True
        self._ready = True
        directories = sum(1 for entry in snapshot.entries.values() if entry[0])
        self.log.info(
            "Watching {root}: {files} files, {directories} directories, "
            "{watches} watches, ready in {seconds:.3f} s",
            root=self.root,
            files=len(snapshot.entries) - directories,
            directories=directories,
            watches=len(self._watches),
            seconds=self._reactor.seconds() - started,
        )
        self._waiters.fire(None)

    def _watch_failed(self, failure: Failure) -> None:
        self.watching = False
        self.log.failure("File watcher could not watch {root}", failure, root=self.root)
        self._waiters.fire(failure)

    # from the watchdog thread

    def _accept(self, path: str, is_dir: bool) -> bool:
        return not self.tracker.rules.ignored(path, is_dir)

    def _touched(self, paths: list[str]) -> None:
        if self.watching:
            for path in paths:
                self.tracker.touch(path)

    # after each announcement

    def _announced(self, path: str, event: FileEvent) -> None:
        self._announce(path, event)
        if path == ".gitignore":
            self._reload_rules()
        elif event == "add" and path.endswith("/" + VIRTUALENV_MARKER):
            self._add_virtualenv(path.rpartition("/")[0])
        if event in ("addDir", "unlinkDir") and "/" not in path:
            self._sync_watches()

    def _adopt_virtualenvs(self, snapshot: Snapshot) -> None:
        """
        Leave out the virtualenvs a scan found (it did not list them).
        """
        if not snapshot.virtualenvs <= self.tracker.rules.virtualenvs:
            self.tracker.rules = self.tracker.rules.with_virtualenvs(snapshot.virtualenvs)

    def _add_virtualenv(self, path: str) -> None:
        """
        A directory turned out to be a virtualenv: forget it and what was
        seen in it, announce nothing more from it, and unwatch it.
        """
        self.tracker.rules = self.tracker.rules.with_virtualenvs({path})
        self.tracker.forget(path)
        self._sync_watches()

    def _reload_rules(self) -> None:
        """
        The root's C{.gitignore} changed: apply it, and read the tree again
        so paths it no longer ignores are announced as added (paths it now
        ignores are dropped silently when they settle).
        """
        rules = IgnoreRules.load(self.root, self._extra_ignore, self.tracker.rules.virtualenvs)
        if rules.patterns == self.tracker.rules.patterns:
            return
        self.tracker.rules = rules

        def rescanned(snapshot: Snapshot) -> None:
            if self._ready:
                self._adopt_virtualenvs(snapshot)
                self.tracker.reconcile(snapshot)
                self._sync_watches()

        d = self._in_thread(scan, self.root, rules)
        d.addCallback(rescanned)
        d.addErrback(self._log_failure, "reload of .gitignore")

    def _sync_watches(self) -> None:
        """
        Watch each top-level directory that is known and not ignored, and
        no other; a directory newly watched is read again once its watch is
        in place, so changes made before that are announced too.
        """
        if not self.watching:
            return
        wanted = {p for p, entry in self.tracker.index.items() if entry[0] and "/" not in p}

        def rewatched(added: list[tuple[str, Snapshot]]) -> None:
            if self._ready:
                for name, snapshot in added:
                    self._adopt_virtualenvs(snapshot)
                    self.tracker.reconcile(snapshot, under=name)

        d = self._in_thread(self._rewatch, wanted, self.tracker.rules)
        d.addCallback(rewatched)
        d.addErrback(self._log_failure, "watch update")

    def _rewatch(self, wanted: set[str], rules: IgnoreRules) -> list[tuple[str, Snapshot]]:
        if self._observer is None or "" not in self._watches:
            return []
        for name in set(self._watches) - wanted - {""}:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(self._watches.pop(name))
        added = []
        for name in sorted(wanted - set(self._watches)):
            snapshot = Snapshot()
            if self._watch_directory(name, rules, snapshot):
                added.append((name, snapshot))
        return added

    # procedures

    def start_procedure(self, data: Any) -> Deferred[dict[str, Any]]:
        self._check_path(data)
        return self.start_watching().addCallback(lambda _: {"success": True, "path": self.root})

    def stop_procedure(self, data: Any) -> Deferred[dict[str, Any]]:
        self._check_path(data)
        return self.stop_watching().addCallback(lambda _: {"success": True, "path": self.root})

    def watched_procedure(self, data: Any) -> list[str]:
        return [self.root] if self.watching else []

    def _check_path(self, data: Any) -> None:
        """
        The original client names the project to watch; this server
        watches its root only, so any other path is refused.
        """
        path = data.get("projectPath", data.get("path")) if isinstance(data, dict) else data
        if path in (None, ""):
            return
        if not isinstance(path, str):
            raise ProcedureError("projectPath must be a string", "invalid_arguments")
        if os.path.realpath(os.path.join(self.root, path)) != self.root:
            raise ProcedureError(
                f"this server watches its root {self.root} only, not {path}", "path_not_watched"
            )

    # helpers

    def _in_thread(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        pool = self._reactor.getThreadPool()
        return self._jobs.run(deferToThreadPool, self._reactor, pool, f, *args)

    def _log_failure(self, failure: Failure, what: str) -> None:
        self.log.failure("File watcher: {what} failed", failure, what=what)


class OverflowAlarm(logging.Handler):
    """
    When the kernel's event queue overflows, events are lost and watchdog
    only says so in its log; this handler turns that log record into a
    rescan on the reactor thread, so no change goes unannounced.
    """

    LOGGER: Final = "watchdog.observers"

    def __init__(self, reactor: Any, rescan: Callable[[], object]) -> None:
        super().__init__(logging.WARNING)
        self._reactor = reactor
        self._rescan = rescan

    def install(self) -> None:
        logging.getLogger(self.LOGGER).addHandler(self)

    def uninstall(self) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._reactor.callFromThread(self._rescan)


class FilesSource(SourceService):
    """
    The C{files} source: a L{FileWatcher} on the workspace root announcing
    through the server's ledger's C{observed}, so a change the files API
    already announced is not announced again, and the C{fileWatcher.*}
    procedures of the original client.
    """

    def __init__(self, context: SourceContext, **watcher_options: Any) -> None:
        super().__init__(context)
        self.watcher = FileWatcher(
            context.root,
            context.file_changes.observed,
            context.reactor,
            ignore=context.ignore,
            delay=float(context.options.get("watch-delay", DEFAULT_DELAY)),
            burst=context.broadcaster.burst,
            **watcher_options,
        )
        self.watcher.setServiceParent(self)

    def startSource(self) -> None:
        self.context.claim_channel(FILES)
        for name, procedure in zip(
            PROCEDURES,
            (
                self.watcher.start_procedure,
                self.watcher.stop_procedure,
                self.watcher.watched_procedure,
            ),
            strict=True,
        ):
            self.context.provide(name, procedure)


def make_source(context: SourceContext) -> FilesSource:
    return FilesSource(context)
