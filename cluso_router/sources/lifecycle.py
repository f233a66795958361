"""
Running the chosen event sources: each is built, started and stopped as a
child of one service, and a source that fails is logged once, reported,
and left out while the server runs on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.interfaces import IEventSourceFactory
from cluso_router.router.procedures import await_result
from cluso_router.sources.context import SourceContext
from cluso_router.sources.discovery import ALL_SOURCES, Discovery, discover_sources
from cluso_router.sources.options import option_defaults


class SourceService(MultiService):
    """
    A base for event sources: it keeps the source's L{SourceContext}, runs
    the services that do the work as its children, and when the source
    stops it withdraws every channel, procedure and route the source added
    through its context.

    Override L{startSource} to claim channels, provide procedures and mount
    routes (it runs before the children start), and L{stopSource} for work
    of your own to stop (after the children stopped). Either may return a
    Deferred or be a coroutine: the server waits for it, and a failure of
    L{startSource} leaves the source out.
    """

    def __init__(self, context: SourceContext) -> None:
        super().__init__()
        self.context = context

    def startService(self) -> Deferred[Any]:
        Service.startService(self)
        started = maybeDeferred(self.startSource).addCallback(await_result)
        return started.addCallback(lambda _: self._start_children())

    def _start_children(self) -> None:
        for service in self:
            service.startService()

    def stopService(self) -> Deferred[Any]:
        self.context.withdraw()
        children: Deferred[Any] = super().stopService()
        return children.addCallback(lambda _: self.stopSource()).addCallback(await_result)

    def startSource(self) -> Any:
        """
        Start the source: claim its channels, provide its procedures, mount
        its routes.
        """

    def stopSource(self) -> Any:
        """
        Stop work of the source's own beyond its child services; what it
        added through its context is gone already.
        """


class SourcesService(MultiService):
    """
    Runs the chosen event sources as its children.

    Sources are discovered, chosen and built when this service starts, not
    when it is constructed, so they see the server's parts in their final
    state (a backplane swapped in by embedding code, for instance). Each
    gets a context of its own (L{SourceContext.for_source}).

    A source's C{startService} may return a Deferred or a coroutine; one
    that raises or fails is logged once with its name, withdrawn, and
    listed in L{failed}. L{ready} fires once every source has started or
    failed.

    @ivar started: the started sources' services by source name.
    @ivar failed: why each source that could not start did not.
    """

    log = Logger()
    name = "sources"

    def __init__(
        self,
        context: Callable[[], SourceContext],
        selection: Sequence[str] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        discover: Callable[[], Discovery] = discover_sources,
    ) -> None:
        """
        @param context: makes the context shared by all sources; each gets
            a copy carrying its own name and option values.
        @param selection: source names, or C{None} for all that apply to the root.
        @param options: option values by source name; defaults fill the rest.
        """
        super().__init__()
        self._context = context
        self._selection = selection
        self._options = options or {}
        self._discover = discover
        self.started: dict[str, IService] = {}
        self.starting: dict[str, Deferred[Any]] = {}
        self.failed: dict[str, str] = {}
        self._contexts: dict[str, SourceContext] = {}
        self._names: dict[IService, str] = {}
        self._router: Any = None
        self._stop_failures: set[str] = set()

    def startService(self) -> None:
        Service.startService(self)
        base = self._context()
        self._router = base.router
        for name in self._stop_failures:
            self._router.problems.pop(f"source {name}", None)
        self._stop_failures.clear()
        discovery = self._discover()
        for problem in discovery.problems:
            self.log.warn("Event sources: {problem}", problem=problem)
        for factory in self._chosen(discovery, base.root):
            self._start(factory, base)

    def ready(self) -> Deferred[None]:
        """
        Fire once every chosen source has started or failed to.
        """
        waits = list(self.starting.values())
        return DeferredList(waits).addCallback(lambda _: None)

    def _chosen(self, discovery: Discovery, root: str) -> list[IEventSourceFactory]:
        names = self._selection
        if names is None:
            return discovery.select(None, root)
        known = [n for n in names if n == ALL_SOURCES or discovery.named(n) is not None]
        for name in names:
            if name not in known:
                self.failed[name] = "not found"
                if self._router is not None:
                    self._router.problems[f"source {name}"] = "not found"
                self.log.error(
                    "Event source {source} was not found (discovered: {names})",
                    source=name,
                    names=", ".join(discovery.names) or "none",
                )
        return discovery.select(known, root)

    def _start(self, factory: IEventSourceFactory, base: SourceContext) -> None:
        name = factory.name
        options = {**option_defaults(factory), **self._options.get(name, {})}
        context = self._contexts[name] = base.for_source(name, options)
        try:
            service = IService(factory.make_source(context))
        except Exception:
            self._failed(name, Failure())
            return
        self._names[service] = name
        # Not addService: it would start the source at once and raise.
        service.parent = self
        self.services.append(service)
        started = maybeDeferred(service.startService).addCallback(await_result)
        self.starting[name] = started
        started.addCallbacks(
            lambda _: self._started(name, service), lambda f: self._failed(name, f, service)
        )

    def _started(self, name: str, service: IService) -> None:
        self.starting.pop(name, None)
        if self.running:
            self.started[name] = service
            self.log.info("Event source {source} started", source=name)

    def _failed(self, name: str, failure: Failure, service: IService | None = None) -> None:
        self.starting.pop(name, None)
        self.failed[name] = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        if self._router is not None:
            self._router.problems[f"source {name}"] = f"failed to start: {self.failed[name]}"
        self.log.failure(
            "Event source {source} failed to start; the server runs without it",
            failure,
            source=name,
        )
        if service is not None:
            self._detach(service)
        context = self._contexts.pop(name, None)
        if context is not None:
            context.withdraw()

    def _detach(self, service: IService) -> None:
        """
        Take C{service} out of this service's children without stopping it.
        """
        self._names.pop(service, None)
        if service in self.services:
            self.services.remove(service)
        if service.name:
            self.namedServices.pop(service.name, None)
        service.parent = None

    def stopService(self) -> Deferred[Any]:
        """
        Stop every source, last started first, each failure logged once
        with its source's name, and forget them, so a later start builds
        them afresh.
        """
        Service.stopService(self)
        stops = []
        for service in reversed(list(self)):
            name = self._names.get(service, repr(service))
            stopped = maybeDeferred(service.stopService).addCallback(await_result)
            stopped.addErrback(self._stop_failed, name)
            stopped.addBoth(self._forget, name, service)
            stops.append(stopped)
        return DeferredList(stops).addCallback(lambda _: self._reset())

    def _stop_failed(self, failure: Failure, name: str) -> None:
        """
        Log a failed stop once and report it until the sources start again
        (an application that stops the sources and keeps serving shows it
        in C{/api/health}).
        """
        self.log.failure("Event source {source} failed to stop cleanly", failure, source=name)
        self._stop_failures.add(name)
        if self._router is not None:
            reason = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
            self._router.problems[f"source {name}"] = f"failed to stop: {reason}"

    def _forget(self, _: object, name: str, service: IService) -> None:
        context = self._contexts.pop(name, None)
        if context is not None:
            context.withdraw()
        self._detach(service)

    def _reset(self) -> None:
        if self._router is not None:
            for name in set(self.failed) - self._stop_failures:
                self._router.problems.pop(f"source {name}", None)
        self.started.clear()
        self.starting.clear()
        self.failed.clear()
