"""
Language-server diagnostics: a stdio Language Server Protocol client and
the service that runs one server per configured language, feeding the
C{diagnostics} channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cluso_router.sources.lsp.config import (
    LanguageServerConfig,
    default_configs,
    missing_defaults,
    parse_lsp_option,
)
from cluso_router.sources.lsp.manager import LanguageServerManager

if TYPE_CHECKING:
    from cluso_router.sources import SourceContext

__all__ = ["LanguageServerConfig", "LanguageServerManager", "make_source", "parse_lsp_option"]


def configured(value: Any) -> list[LanguageServerConfig]:
    """
    The servers named by the C{lsp} option: one C{LANG=COMMAND} string or
    parsed config, or a list of them; none means the default servers that
    are installed (beside this Python or on C{PATH}).
    """
    if not value:
        return default_configs()
    items: Iterable[Any] = [value] if isinstance(value, str | LanguageServerConfig) else value
    configs = [i if isinstance(i, LanguageServerConfig) else parse_lsp_option(i) for i in items]
    by_language = {config.language: config for config in configs}
    return list(by_language.values())


def make_source(context: SourceContext) -> LanguageServerManager:
    chosen = context.options.get("lsp")
    missing = [] if chosen else missing_defaults()
    return LanguageServerManager(context, configured(chosen), missing=missing)
