"""
The C{search} channel: progress and results of running searches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport

RESULT_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["file", "line", "column", "match", "context"],
    "properties": {
        "file": {"type": "string", "description": "Relative to the root, / separated"},
        "line": {"type": "integer", "description": "1-based"},
        "column": {"type": "integer", "description": "1-based, in characters"},
        "match": {"type": "string"},
        "context": {"type": "string", "description": "The line, with contextLines around it"},
    },
}


def search_key(data: Any) -> str | None:
    """
    The search a progress event without results belongs to (its
    C{searchId}): results arrive in batches and are never dropped, while a
    newer progress count replaces an older one.
    """
    if not isinstance(data, dict) or data.get("results"):
        return None
    search_id = data.get("searchId")
    return str(search_id) if isinstance(search_id, (str, int)) else None


SEARCH: Final = ChannelSpec(
    "search",
    "Progress of a running search: files searched, results found so far, then done",
    conflate=search_key,
    schema={
        "type": "object",
        "required": ["query", "completed", "total", "results", "timestamp"],
        "properties": {
            "query": {"type": "string"},
            "completed": {"type": "integer", "minimum": 0},
            "total": {"type": ["integer", "null"], "minimum": 0},
            "results": {"type": "array", "items": RESULT_SCHEMA},
            "searchId": {"type": "string"},
            "done": {"type": "boolean"},
            "truncated": {"type": "boolean"},
            "cancelled": {"type": "boolean"},
            "limit": {
                "enum": ["maxResults", "files", "bytes", "seconds"],
                "description": "With truncated: the limit that ended the search early "
                "(maxResults, or a budget of the pure-Python engine)",
            },
            "error": {"type": "string"},
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=(
        {
            "query": "TODO",
            "completed": 120,
            "total": None,
            "results": [
                {"file": "src/a.py", "line": 4, "column": 7, "match": "TODO", "context": "# TODO"}
            ],
            "searchId": "s-1",
            "done": False,
            "timestamp": "2024-12-09T15:30:45.123Z",
        },
    ),
)


def progress_payload(
    query: str,
    completed: int,
    total: int | None,
    results: Sequence[Mapping[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """
    A C{search} event's payload but its timestamp; C{extra} carries
    C{searchId}, C{done} and the like.
    """
    return {
        "query": query,
        "completed": completed,
        "total": total,
        "results": [dict(r) for r in results],
        **extra,
    }


def search_progress(
    broadcaster: Broadcaster,
    query: str,
    completed: int,
    total: int | None,
    results: Sequence[Mapping[str, Any]],
    **extra: Any,
) -> DeliveryReport:
    """
    Publish a search's progress; the original server's C{searchProgress}.
    """
    return broadcaster.emit_stamped(
        SEARCH.channel, progress_payload(query, completed, total, results, **extra)
    )


def measure_progress(payload: Any, count: int) -> tuple[float, float | None, str]:
    """
    How far a search is by one of its progress payloads: files searched of
    the files listed (known once the listing ended).
    """
    found = len(payload["results"])
    line = f"{payload['completed']} files searched, {found} more results"
    return payload["completed"], payload["total"], line
