"""
The C{ai-response} channel: streamed AI answers, chunk by chunk.
"""

from __future__ import annotations

from typing import Any, Final

from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport

AI_RESPONSE: Final = ChannelSpec(
    "ai-response",
    "Chunks of streamed AI answers, indexed without gaps, the last one finished",
    schema={
        "type": "object",
        "required": ["id", "chunk", "index", "finished", "timestamp"],
        "properties": {
            "id": {"type": "string"},
            "chunk": {"type": "string"},
            "index": {"type": "integer", "minimum": 0},
            "finished": {"type": "boolean"},
            "error": {"type": "string", "description": "On the final chunk of a failed answer"},
            "usage": {"type": "object"},
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=(
        {
            "id": "ai-1",
            "chunk": "Hello",
            "index": 0,
            "finished": False,
            "timestamp": "2024-12-09T15:30:45.123Z",
        },
    ),
)


def ai_chunk(
    broadcaster: Broadcaster, id: str, chunk: str, index: int, finished: bool, **extra: Any
) -> DeliveryReport:
    """
    Publish one piece of a streamed answer; the original server's C{aiChunk}.
    C{extra} carries fields such as C{error} on the final chunk of a failed
    answer.
    """
    return broadcaster.emit_stamped(
        AI_RESPONSE.channel,
        {"id": id, "chunk": chunk, "index": index, "finished": finished, **extra},
    )
