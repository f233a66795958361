"""
AI answers streamed from Google Gemini, Anthropic or any OpenAI-compatible
server to HTTP clients and the C{ai-response} channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluso_router.sources.ai.service import AIService, AISettings

if TYPE_CHECKING:
    from cluso_router.sources import SourceContext

__all__ = ["AIService", "AISettings", "make_source"]


def make_source(context: SourceContext) -> AIService:
    return AIService(context)
