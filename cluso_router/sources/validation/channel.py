"""
The C{validation} channel: one event per validator run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport

VALIDATION_TYPES: Final = frozenset({"lint", "typecheck", "format"})

ERROR_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["file", "line", "column", "message", "rule"],
    "properties": {
        "file": {"type": "string"},
        "line": {"type": "integer"},
        "column": {"type": "integer"},
        "message": {"type": "string"},
        "rule": {"type": ["string", "null"]},
    },
}
RESULT_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["tool", "type", "passed", "errors"],
    "properties": {
        "tool": {"type": "string"},
        "type": {"type": "string", "enum": sorted(VALIDATION_TYPES)},
        "passed": {"type": "boolean"},
        "errors": {"type": "array", "items": ERROR_SCHEMA},
        "error": {
            "type": "string",
            "description": "Why the tool could not check (not installed, crashed...)",
        },
        "install": {
            "type": "string",
            "description": "With error, when the tool is not installed: how to install it",
        },
        "durationMs": {"type": "integer"},
    },
}

VALIDATION: Final = ChannelSpec(
    "validation",
    "A linter, type checker or formatter finished a run over the workspace",
    schema={
        "type": "object",
        "required": ["validation", "timestamp"],
        "properties": {"validation": RESULT_SCHEMA, "timestamp": TIMESTAMP_SCHEMA},
    },
    examples=(
        {
            "validation": {
                "tool": "ruff",
                "type": "lint",
                "passed": False,
                "errors": [
                    {
                        "file": "app.py",
                        "line": 3,
                        "column": 1,
                        "message": "`os` imported but unused",
                        "rule": "F401",
                    }
                ],
                "durationMs": 41,
            },
            "timestamp": "2024-12-09T15:30:45.123Z",
        },
    ),
)


def validation_complete(broadcaster: Broadcaster, validation: Mapping[str, Any]) -> DeliveryReport:
    """
    Publish a validator's result; the original server's C{validationComplete}.
    """
    if validation.get("type") not in VALIDATION_TYPES:
        raise ValueError(f"unknown validation type {validation.get('type')!r}")
    return broadcaster.emit_stamped(VALIDATION.channel, {"validation": dict(validation)})
