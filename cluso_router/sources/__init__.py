"""
Event sources: services that publish on the router, each a Twisted plugin
in the C{cluso_plugins} package.

A source gets a L{SourceContext} (the router, the broadcaster, the file
change ledger, the workspace root, its options) and adds its channels,
procedures and HTTP routes through it, so they go away when it stops. The
built-in sources (C{files}, C{git}, C{search}, C{validation}, C{lsp},
C{ai}) live in the packages beside this module, each built exactly as a
third-party one would be.
"""

from cluso_router.sources.context import SourceContext
from cluso_router.sources.discovery import ALL_SOURCES, Discovery, UnknownSource, discover_sources
from cluso_router.sources.lifecycle import SourceService, SourcesService
from cluso_router.sources.plugin import SourceOption, SourcePlugin, option_defaults, source_options

__all__ = [
    "ALL_SOURCES",
    "Discovery",
    "SourceContext",
    "SourceOption",
    "SourcePlugin",
    "SourceService",
    "SourcesService",
    "UnknownSource",
    "discover_sources",
    "option_defaults",
    "source_options",
]
