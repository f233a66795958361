"""
An event source declared as a Twisted plugin: its name, its options and
the dotted name of what builds its service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.python.reflect import namedAny
from zope.interface import implementer

from cluso_router.interfaces import IEventSourceFactory

if TYPE_CHECKING:
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
    @ivar options: the source's L{usage.Options} subclass (see
        L{cluso_router.sources.options.SourceOptions}), or a list of
        C{[long, short, default, help, coerce]} entries.
    @ivar applies: whether the source runs by default for a workspace root.
    """

    name: str
    description: str
    service: str
    options: type[usage.Options] | Sequence[Sequence[Any]] = ()
    applies: Callable[[str], bool] = always

    def applies_to(self, root: str) -> bool:
        return self.applies(root)

    def make_source(self, context: SourceContext) -> IService:
        build: Callable[[SourceContext], IService] = namedAny(self.service)
        return build(context)
