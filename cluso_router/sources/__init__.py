"""
Event sources: services that publish on the router, each a Twisted plugin
in the C{cluso_plugins} package.

A source gets a L{SourceContext} (the router, the broadcaster, the file
change ledger, the workspace root, its options) and adds its channels,
procedures and HTTP routes through it, so they go away when it stops. The
built-in sources (C{files}, C{git}, C{search}, C{validation}, C{lsp},
C{ai}) live in the packages beside this module, each built exactly as a
third-party one would be.

Names load on first use: a dropin importing L{SourcePlugin} and
L{SourceOptions} loads only those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluso_router._lazy import lazy_exports

if TYPE_CHECKING:
    from cluso_router.sources.context import SourceContext
    from cluso_router.sources.discovery import (
        ALL_SOURCES,
        Discovery,
        UnknownSource,
        discover_sources,
    )
    from cluso_router.sources.lifecycle import SourceService, SourcesService
    from cluso_router.sources.options import SourceOptions, option_defaults, option_specs
    from cluso_router.sources.plugin import SourcePlugin

_HOMES = {
    "ALL_SOURCES": "cluso_router.sources.discovery",
    "Discovery": "cluso_router.sources.discovery",
    "SourceContext": "cluso_router.sources.context",
    "SourceOptions": "cluso_router.sources.options",
    "SourcePlugin": "cluso_router.sources.plugin",
    "SourceService": "cluso_router.sources.lifecycle",
    "SourcesService": "cluso_router.sources.lifecycle",
    "UnknownSource": "cluso_router.sources.discovery",
    "discover_sources": "cluso_router.sources.discovery",
    "option_defaults": "cluso_router.sources.options",
    "option_specs": "cluso_router.sources.options",
}

__all__ = [
    "ALL_SOURCES",
    "Discovery",
    "SourceContext",
    "SourceOptions",
    "SourcePlugin",
    "SourceService",
    "SourcesService",
    "UnknownSource",
    "discover_sources",
    "option_defaults",
    "option_specs",
]

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
