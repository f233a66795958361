"""
The C{git} source: notices what happens to the root's repository outside
the server (a commit or a checkout in a terminal) and says so on the C{git}
channel.

Watchdog watches C{HEAD}, C{index}, C{packed-refs} and C{refs/}; once the
repository has been quiet for a short delay, git itself is asked for the
state (C{git status --porcelain=v2 --branch}, without optional locks, so
reading never rewrites the index and never triggers itself), and the
difference from the last state read is published: C{branch} when HEAD now
names another branch, C{commit} when the current branch moved, C{status}
when the index entries changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.router import Router
from cluso_router.sources.context import SourceContext
from cluso_router.sources.files.bridge import ThreadBridge, stop_observer
from cluso_router.sources.files.ready import Waiters
from cluso_router.sources.files.service import WATCHED_EVENTS
from cluso_router.sources.lifecycle import SourceService
from cluso_router.workspace.git import GIT, GitEventType, GitRunner, git_event

DEFAULT_DELAY: Final = 0.2
#: Seconds a change waits before it is announced, for the git API to claim it.
DEFAULT_GRACE: Final = 0.5

#: Files of the git directory whose change can mean a new state.
_WATCHED_FILES: Final = frozenset({"HEAD", "index", "packed-refs"})


class NotARepository(Exception):
    pass


@dataclass(frozen=True)
class GitState:
    """
    What the events are about: the branch (C{None} when HEAD is detached),
    the commit (C{None} before the first one) with its short id and subject,
    and the status entries of the index.
    """

    branch: str | None
    commit: str | None
    short: str
    subject: str
    entries: tuple[str, ...]

    @property
    def staged(self) -> int:
        return sum(1 for e in self.entries if e[:1] in "12" and e[2:3] != ".")

    @property
    def modified(self) -> int:
        return sum(1 for e in self.entries if e[:1] in "12" and e[3:4] != ".")

    @property
    def unmerged(self) -> int:
        return sum(1 for e in self.entries if e[:1] == "u")

    def describe_head(self) -> str:
        if self.commit is None:
            return "no commits yet"
        return f"{self.short} {self.subject}"


def parse_status(output: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    """
    Branch, commit and entries from C{git status --porcelain=v2 --branch -z}.
    """
    branch: str | None = None
    commit: str | None = None
    entries = []
    fields = iter(output.split("\0"))
    for field in fields:
        if field.startswith("# branch.oid "):
            oid = field[len("# branch.oid ") :]
            commit = None if oid == "(initial)" else oid
        elif field.startswith("# branch.head "):
            head = field[len("# branch.head ") :]
            branch = None if head == "(detached)" else head
        elif field[:2] in ("1 ", "2 ", "u "):
            if field.startswith("2 "):
                field = f"{field}\0{next(fields, '')}"
            entries.append(field)
    return branch, commit, tuple(entries)


def describe_change(old: GitState, new: GitState) -> tuple[GitEventType, str] | None:
    """
    The event for going from C{old} to C{new}, or C{None} if nothing that
    clients are told about changed.
    """
    if old.branch != new.branch:
        if new.branch is None:
            return "branch", f"HEAD detached at {new.describe_head()}"
        return "branch", f"Switched to branch '{new.branch}' at {new.describe_head()}"
    if old.commit != new.commit:
        where = new.branch if new.branch is not None else "detached HEAD"
        if new.commit is None:
            return "commit", f"[{where}] no commits yet"
        return "commit", f"[{where} {new.short}] {new.subject}"
    if old.entries != new.entries:
        where = f"On branch {new.branch}" if new.branch is not None else "HEAD detached"
        counts = f"{new.staged} staged, {new.modified} modified"
        if new.unmerged:
            counts += f", {new.unmerged} unmerged"
        return "status", f"{where}: {counts}"
    return None


class GitWatcher(Service):
    """
    Publishes C{git} events for changes made to the repository outside the
    server.

    A change the server made itself (through the git API, which publishes
    its own event) is taken in silently: when any C{git} event is published
    between the last state taken in and the end of a short grace period
    after the new one was read, the new state is adopted without a word.
    The grace period also keeps the steps of one API operation (C{git add}
    then C{git commit}) from being announced one by one: a change of the
    repository during it sends the watcher back to reading.
    """

    log = Logger()

    def __init__(
        self,
        runner: GitRunner,
        broadcaster: Broadcaster,
        router: Router,
        reactor: Any,
        delay: float = DEFAULT_DELAY,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._runner = runner
        self._broadcaster = broadcaster
        self._router = router
        self._reactor = reactor
        self._delay = delay
        self._grace = grace
        self.state: GitState | None = None
        self.git_dir: str | None = None
        self._observer: BaseObserver | None = None
        self._timer: IDelayedCall | None = None
        self._announcing: IDelayedCall | None = None
        self._reading = False
        self._again = False
        self._published_seen = 0
        self._waiters = Waiters()

    def startService(self) -> None:
        super().startService()
        self._observer = Observer()
        self._observer.start()
        d = ensureDeferred(self._start())
        d.addErrback(self._start_failed)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in (self._timer, self._announcing):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._announcing = None
        observer, self._observer = self._observer, None
        if observer is None:
            return succeed(None)
        return deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), stop_observer, observer
        )

    def when_ready(self) -> Deferred[None]:
        """
        Fires once the watches are in place and the first state is read;
        fails if the repository cannot be watched.
        """
        if self.state is not None:
            return succeed(None)
        return self._waiters.wait()

    async def _start(self) -> None:
        located = await self._runner.run("rev-parse", "--absolute-git-dir", "--git-common-dir")
        if located.code != 0:
            raise NotARepository(located.stderr.strip() or "not a git repository")
        git_dir, common = located.stdout.splitlines()[:2]
        common_dir = os.path.realpath(os.path.join(self._runner.cwd, common))
        self.git_dir = git_dir
        self._watch(git_dir, common_dir)
        state = await self._read()
        self._adopt(state)
        self.log.info(
            "Watching git repository {git_dir}: {where}",
            git_dir=common_dir,
            where=state.branch or "detached HEAD",
        )
        self._waiters.fire(None)

    def _start_failed(self, failure: Failure) -> None:
        self.log.failure("Git watcher could not start in {root}", failure, root=self._runner.cwd)
        self._waiters.fire(failure)

    def _watch(self, git_dir: str, common_dir: str) -> None:
        """
        HEAD and the index live in the git directory; refs and packed-refs
        in the common directory (the same one unless this is a linked
        worktree).
        """
        assert self._observer is not None
        places = [(git_dir, False)]
        if common_dir != git_dir:
            places.append((common_dir, False))
        places.append((os.path.join(common_dir, "refs"), True))
        for path, recursive in places:
            base = path if not recursive else common_dir
            bridge = ThreadBridge(self._reactor, base, _relevant, self._touched)
            self._observer.schedule(bridge, path, recursive=recursive, event_filter=WATCHED_EVENTS)

    def _touched(self, paths: list[str]) -> None:
        if not self.running or self.state is None:
            return
        if self._announcing is not None and self._announcing.active():
            self._announcing.cancel()
        self._announcing = None
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._delay)
        else:
            self._timer = self._reactor.callLater(self._delay, self._refresh)

    def _refresh(self) -> None:
        self._timer = None
        if self._reading:
            self._again = True
            return
        self._reading = True
        d = ensureDeferred(self._compare())
        d.addErrback(lambda f: self.log.failure("Git watcher could not read the state", f))
        d.addBoth(self._read_done)

    def _read_done(self, _: object) -> None:
        self._reading = False
        if self._again and self.running:
            self._again = False
            self._refresh()

    async def _compare(self) -> None:
        new = await self._read()
        change = describe_change(self.state, new) if self.state is not None else None
        if change is None or self._published() != self._published_seen:
            self._adopt(new)
        elif self.running:
            self._announcing = self._reactor.callLater(self._grace, self._announce, new, change)

    def _announce(self, new: GitState, change: tuple[GitEventType, str]) -> None:
        self._announcing = None
        if self._published() == self._published_seen:
            git_event(self._broadcaster, *change)
        self._adopt(new)

    def _adopt(self, state: GitState) -> None:
        self.state = state
        self._published_seen = self._published()

    async def _read(self) -> GitState:
        status = await self._runner.run(
            "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=no"
        )
        if status.code != 0:
            raise NotARepository(status.stderr.strip())
        branch, commit, entries = parse_status(status.stdout)
        short = subject = ""
        if commit is not None:
            if self.state is not None and self.state.commit == commit:
                short, subject = self.state.short, self.state.subject
            else:
                shown = await self._runner.run("log", "-1", "--format=%h%x00%s", commit, "--")
                short, _, subject = shown.stdout.rstrip("\n").partition("\0")
        return GitState(branch, commit, short, subject, entries)

    def _published(self) -> int:
        return self._router.published.get("git", 0)


def _relevant(path: str, is_dir: bool) -> bool:
    if path.endswith(".lock"):
        return False
    return path in _WATCHED_FILES or path.startswith("refs/")


class GitSource(SourceService):
    """
    The C{git} source: a L{GitWatcher} on the root's repository.
    """

    def __init__(self, context: SourceContext, runner: GitRunner) -> None:
        super().__init__(context)
        self.watcher = GitWatcher(
            runner,
            context.broadcaster,
            context.router,
            context.reactor,
            delay=float(context.options.get("git-delay", DEFAULT_DELAY)),
        )
        self.watcher.setServiceParent(self)

    def startSource(self) -> None:
        self.context.claim_channel(GIT)


def make_source(context: SourceContext) -> GitSource:
    """
    The C{git} plugin's service; fails at once when git is not installed.
    """
    runner = GitRunner(context.root, reactor=context.reactor)
    if runner.git is None:
        raise FileNotFoundError("git is not installed (no git executable on PATH)")
    return GitSource(context, runner)
