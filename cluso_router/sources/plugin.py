"""
An event source declared as a Twisted plugin: its name, its options and
the dotted name of what builds its service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService
from twisted.plugin import IPlugin
from twisted.python.reflect import namedAny
from zope.interface import implementer

from cluso_router.interfaces import IEventSourceFactory
from cluso_router.sources.context import SourceContext


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
