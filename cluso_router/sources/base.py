"""
Event sources as Twisted plugins: what a source is given, how sources are
found, chosen and run.

A source is an L{IEventSourceFactory} provider in the C{cluso_plugins}
package, found with L{twisted.plugin.getPlugins}. L{SourcesService} builds
the chosen ones when the server starts and runs each as its child; one that
fails to build or start is logged and left out, and the server runs on.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Final

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogPublisher
from twisted.plugin import IPlugin, getPlugins
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from twisted.web.resource import Resource
from zope.interface import implementer, provider

from cluso_router.interfaces import IEventSourceFactory
from cluso_router.router.broadcaster import EventBroadcaster
from cluso_router.router.router import Router
from cluso_router.workspace.ledger import FileChangeLedger

#: C{--sources} value that selects every discovered source.
ALL_SOURCES: Final = "all"

_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class SourceContext:
    """
    Everything a source needs from the server it runs in.

    @ivar options: the values of this source's own options, by long name.
    @ivar ignore: C{.gitignore}-style patterns given with C{--ignore}, for
        sources that walk the workspace.
    @ivar web_root: the root resource of the server's site, where a source
        mounts HTTP routes of its own; C{None} when it runs without one.
    """

    router: Router
    broadcaster: EventBroadcaster
    file_changes: FileChangeLedger
    root: str
    reactor: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    web_root: Resource | None = None


def always(root: str) -> bool:
    return True


@implementer(IPlugin, IEventSourceFactory)
@dataclass(frozen=True)
class SourcePlugin:
    """
    An L{IEventSourceFactory} declared in a few lines of a plugin module.

    The callable that builds the service is named by its dotted path and
    imported only when the source is started, so plugin modules stay cheap
    to import and a missing dependency fails only the source that needs it.

    @ivar service: dotted name of a callable taking a L{SourceContext} and
        returning an L{IService}.
    @ivar applies: whether the source runs by default for a workspace root.
    """

    name: str
    description: str
    service: str
    options: Sequence[Sequence[Any]] = ()
    applies: Callable[[str], bool] = always

    def applies_to(self, root: str) -> bool:
        return self.applies(root)

    def make_source(self, context: SourceContext) -> IService:
        build: Callable[[SourceContext], IService] = namedAny(self.service)
        return build(context)


@dataclass(frozen=True)
class SourceOption:
    """
    One option a source adds to C{twistd cluso}: a flag when its default is
    C{False}, else a parameter taking a value.
    """

    long: str
    short: str | None
    default: Any
    help: str
    coerce: Callable[[str], Any] | None

    @property
    def flag(self) -> bool:
        return isinstance(self.default, bool)

    @classmethod
    def parse(cls, spec: Sequence[Any]) -> SourceOption:
        """
        Read an C{optParameters}-style list C{[long, short, default, help,
        coerce]}; the last three may be left out.
        """
        if isinstance(spec, str) or not 1 <= len(spec) <= 5:
            raise ValueError(f"option {spec!r} is not a [long, short, default, help, coerce] list")
        long, short, default, help, coerce = [*spec, None, None, None, None][:5]
        if not isinstance(long, str) or not long:
            raise ValueError(f"option {spec!r} has no long name")
        if short is not None and (not isinstance(short, str) or len(short) != 1):
            raise ValueError(f"option --{long}: short name must be one character")
        if default is True:
            raise ValueError(f"option --{long}: a flag cannot default to True")
        return cls(long, short, default, help or "", coerce)


def source_options(factory: IEventSourceFactory) -> list[SourceOption]:
    return [SourceOption.parse(spec) for spec in factory.options]


def option_defaults(factory: IEventSourceFactory) -> dict[str, Any]:
    return {option.long: option.default for option in source_options(factory)}


class UnknownSource(ValueError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        listed = ", ".join(known) or "none"
        super().__init__(f"unknown event source {name!r} (discovered: {listed})")
        self.name = name


@dataclass(frozen=True)
class Discovery:
    """
    The sources found in the plugin package, by unique name, and the
    problems met on the way (a module that failed to import, a malformed or
    duplicate plugin), so C{--list-sources} can show why one is missing.
    """

    factories: tuple[IEventSourceFactory, ...]
    problems: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [factory.name for factory in self.factories]

    def named(self, name: str) -> IEventSourceFactory | None:
        for factory in self.factories:
            if factory.name == name:
                return factory
        return None

    def select(self, names: Sequence[str] | None, root: str) -> list[IEventSourceFactory]:
        """
        The factories to run: those named (C{"all"} for every one), or when
        C{names} is C{None} those that apply to C{root}.

        @raise UnknownSource: a name was not discovered.
        """
        if names is None:
            return [factory for factory in self.factories if _applies(factory, root)]
        chosen: list[IEventSourceFactory] = []
        for name in names:
            if name == ALL_SOURCES:
                found = list(self.factories)
            else:
                factory = self.named(name)
                if factory is None:
                    raise UnknownSource(name, self.names)
                found = [factory]
            chosen.extend(f for f in found if f not in chosen)
        return chosen


def _applies(factory: IEventSourceFactory, root: str) -> bool:
    try:
        return bool(factory.applies_to(root))
    except Exception:
        Logger().failure("Event source {source} could not tell if it applies", source=factory.name)
        return False


def discover_sources(package: ModuleType | None = None) -> Discovery:
    """
    Find every L{IEventSourceFactory} in C{package} (default: C{cluso_plugins}).

    Twisted logs a plugin module that fails to import (with the legacy
    C{log.err}) and skips it; those log events are collected here as
    problems too.
    """
    if package is None:
        package = importlib.import_module("cluso_plugins")
    failures: list[str] = []

    @provider(ILogObserver)
    def collect(event: LogEvent) -> None:
        failure = event.get("log_failure", event.get("failure"))
        if isinstance(failure, Failure):
            failures.append(_describe_failure(failure))

    globalLogPublisher.addObserver(collect)
    try:
        found = list(getPlugins(IEventSourceFactory, package))
    finally:
        globalLogPublisher.removeObserver(collect)
    problems = [f"cannot load a plugin module: {text}" for text in failures]
    factories: dict[str, IEventSourceFactory] = {}
    for factory in sorted(found, key=lambda f: str(getattr(f, "name", ""))):
        name = getattr(factory, "name", None)
        try:
            if not isinstance(name, str) or not _SOURCE_NAME.match(name):
                raise ValueError(f"invalid source name {name!r}")
            source_options(factory)
        except Exception as e:
            problems.append(f"ignored plugin {factory!r}: {e}")
            continue
        if name in factories:
            problems.append(f"ignored a second source named {name!r}: {factory!r}")
            continue
        factories[name] = factory
    return Discovery(tuple(factories.values()), tuple(problems))


def _describe_failure(failure: Failure) -> str:
    where = failure.frames[-1][1] if failure.frames else "?"
    return f"{where}: {type(failure.value).__name__}: {failure.getErrorMessage()}"


class SourcesService(MultiService):
    """
    Runs the chosen event sources as its children.

    Sources are discovered, chosen and built when this service starts, not
    when it is constructed, so they see the server's parts in their final
    state (a backplane swapped in by embedding code, for instance).

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
            a copy carrying its own option values.
        @param selection: source names, or C{None} for all that apply to the root.
        @param options: option values by source name; defaults fill the rest.
        """
        super().__init__()
        self._context = context
        self._selection = selection
        self._options = options or {}
        self._discover = discover
        self.started: dict[str, IService] = {}
        self.failed: dict[str, str] = {}

    def startService(self) -> None:
        base = self._context()
        discovery = self._discover()
        for problem in discovery.problems:
            self.log.warn("Event sources: {problem}", problem=problem)
        for factory in self._chosen(discovery, base.root):
            self._start(factory, base)
        Service.startService(self)

    def _chosen(self, discovery: Discovery, root: str) -> list[IEventSourceFactory]:
        names = self._selection
        if names is None:
            return discovery.select(None, root)
        known = [n for n in names if n == ALL_SOURCES or discovery.named(n) is not None]
        for name in names:
            if name not in known:
                self.failed[name] = "not found"
                self.log.error(
                    "Event source {source} was not found (discovered: {names})",
                    source=name,
                    names=", ".join(discovery.names) or "none",
                )
        return discovery.select(known, root)

    def _start(self, factory: IEventSourceFactory, base: SourceContext) -> None:
        name = factory.name
        try:
            options = {**option_defaults(factory), **self._options.get(name, {})}
            service = IService(factory.make_source(replace(base, options=options)))
            service.setServiceParent(self)
            try:
                service.startService()
            except BaseException:
                service.disownServiceParent()
                raise
        except Exception as e:
            self.failed[name] = f"{type(e).__name__}: {e}"
            self.log.failure(
                "Event source {source} failed to start; the server runs without it",
                source=name,
            )
            return
        self.started[name] = service
        self.log.info("Event source {source} started", source=name)

    def stopService(self) -> Deferred[Any]:
        """
        Stop every source (last started first) and forget them, so a later
        start builds them afresh.
        """
        stopped: Deferred[Any] = super().stopService()
        for service in list(self):
            service.disownServiceParent()
        self.started.clear()
        self.failed.clear()
        return stopped
