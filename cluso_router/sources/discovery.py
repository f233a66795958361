"""
Finding event sources: every L{IEventSourceFactory} in the C{cluso_plugins}
package, by unique name, and what went wrong on the way.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

from twisted import plugin as twisted_plugin
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.python.failure import Failure

from cluso_router.interfaces import IEventSourceFactory
from cluso_router.sources.options import option_specs

#: C{--sources} value that selects every discovered source.
ALL_SOURCES: Final = "all"

_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


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

    A plugin module that fails to import is skipped and becomes one
    problem here, reported once by whoever asked (Twisted's own report of
    it, an "Unhandled Error" traceback on every log observer, is held
    back: see L{_PluginLog}).
    """
    if package is None:
        package = importlib.import_module("cluso_plugins")
    plugin_log = _PluginLog()
    previous, twisted_plugin.log = twisted_plugin.log, plugin_log  # type: ignore[assignment]
    try:
        found = list(getPlugins(IEventSourceFactory, package))
    finally:
        twisted_plugin.log = previous
    problems = [f"cannot load a plugin module: {text}" for text in plugin_log.failures]
    factories: dict[str, IEventSourceFactory] = {}
    for factory in sorted(found, key=lambda f: str(getattr(f, "name", ""))):
        name = getattr(factory, "name", None)
        try:
            if not isinstance(name, str) or not _SOURCE_NAME.match(name):
                raise ValueError(f"invalid source name {name!r}")
            option_specs(factory)
        except Exception as e:
            problems.append(f"ignored plugin {factory!r}: {e}")
            continue
        if name in factories:
            problems.append(f"ignored a second source named {name!r}: {factory!r}")
            continue
        factories[name] = factory
    return Discovery(tuple(factories.values()), tuple(problems))


class _PluginLog:
    """
    Stands in for C{twisted.python.log} inside C{twisted.plugin} while
    sources are discovered: what Twisted would log as an error (a dropin
    that does not import, a plugin that does not adapt) is kept as a
    problem instead; notes (a plugin cache it cannot write) are dropped.
    """

    def __init__(self) -> None:
        self.failures: list[str] = []

    def err(self, _stuff: Any = None, _why: str | None = None, **kw: Any) -> None:
        failure = _stuff if isinstance(_stuff, Failure) else Failure()
        self.failures.append(_describe_failure(failure))

    def msg(self, *message: Any, **kw: Any) -> None:
        pass


def _describe_failure(failure: Failure) -> str:
    where = failure.frames[-1][1] if failure.frames else "?"
    return f"{where}: {type(failure.value).__name__}: {failure.getErrorMessage()}"
