"""
The channels of the language-server source: C{diagnostics} (what the
servers report, per file) and C{lsp} (servers starting, restarting, failing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport

SEVERITIES: Final = frozenset({"error", "warning", "info", "hint"})

DIAGNOSTIC_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["file", "line", "column", "message", "severity", "source"],
    "properties": {
        "file": {"type": "string"},
        "line": {"type": "integer"},
        "column": {"type": "integer"},
        "message": {"type": "string"},
        "severity": {"type": "string", "enum": sorted(SEVERITIES)},
        "source": {"type": ["string", "null"]},
    },
}


def diagnostics_key(data: Any) -> str | None:
    """
    The file a C{diagnostics} event is about: its C{file} field, or the one
    file all its diagnostics name. Events about several files, or about no
    named file, are never conflated.
    """
    if not isinstance(data, dict):
        return None
    file = data.get("file")
    if isinstance(file, str):
        return file
    diagnostics = data.get("diagnostics")
    if not isinstance(diagnostics, list) or not diagnostics:
        return None
    files = {d.get("file") if isinstance(d, dict) else None for d in diagnostics}
    if len(files) != 1:
        return None
    only = files.pop()
    return only if isinstance(only, str) else None


DIAGNOSTICS: Final = ChannelSpec(
    "diagnostics",
    "The diagnostics of one file as the language servers now see them (all of them)",
    conflate=diagnostics_key,
    schema={
        "type": "object",
        "required": ["diagnostics", "cleared", "timestamp"],
        "properties": {
            "diagnostics": {"type": "array", "items": DIAGNOSTIC_SCHEMA},
            "cleared": {"type": "boolean"},
            "file": {"type": "string", "description": "The file this report replaces"},
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=(
        {
            "diagnostics": [
                {
                    "file": "app.py",
                    "line": 3,
                    "column": 1,
                    "message": "'os' imported but unused",
                    "severity": "warning",
                    "source": "pyflakes",
                }
            ],
            "cleared": False,
            "file": "app.py",
            "timestamp": "2024-12-09T15:30:45.123Z",
        },
    ),
)

LSP: Final = ChannelSpec(
    "lsp",
    "A language server started, is restarting after a crash, or was given up",
    schema={
        "type": "object",
        "required": ["type", "language", "command", "restarts", "timestamp"],
        "properties": {
            "type": {"type": "string", "enum": ["started", "restarting", "failed"]},
            "language": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}},
            "restarts": {"type": "integer", "minimum": 0},
            "pid": {"type": "integer"},
            "delay": {"type": "number"},
            "reason": {"type": "string"},
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=(
        {
            "type": "started",
            "language": "python",
            "command": ["pylsp"],
            "restarts": 0,
            "pid": 4242,
            "timestamp": "2024-12-09T15:30:45.123Z",
        },
    ),
)


def diagnostics_updated(
    broadcaster: Broadcaster,
    diagnostics: Sequence[Mapping[str, Any]],
    cleared: bool = False,
    **extra: Any,
) -> DeliveryReport:
    """
    Publish diagnostics; the original server's C{diagnosticsUpdated}.
    C{extra} carries fields such as C{file}, the file a report replaces.
    """
    for diagnostic in diagnostics:
        if diagnostic.get("severity") not in SEVERITIES:
            raise ValueError(f"unknown severity {diagnostic.get('severity')!r}")
    return broadcaster.emit_stamped(
        DIAGNOSTICS.channel,
        {"diagnostics": [dict(d) for d in diagnostics], "cleared": cleared, **extra},
    )
