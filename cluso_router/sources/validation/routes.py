"""
C{POST /api/validate} with C{{tool?}} (or no body): run the workspace's
validators and answer with their results, as C{validation.run} does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from cluso_router.web.routes import STRING, Operation, Param, Schema

#: OpenAPI 3.0 forms of the result schemas in
#: L{cluso_router.sources.validation.channel} (C{nullable}, not C{"null"}).
ERROR: Final[Schema] = {
    "type": "object",
    "required": ["file", "line", "column", "message", "rule"],
    "properties": {
        "file": STRING,
        "line": {"type": "integer"},
        "column": {"type": "integer"},
        "message": STRING,
        "rule": {"type": "string", "nullable": True},
    },
}
VALIDATION: Final[Schema] = {
    "type": "object",
    "required": ["tool", "type", "passed", "errors"],
    "properties": {
        "tool": STRING,
        "type": {"type": "string", "enum": ["lint", "typecheck", "format"]},
        "passed": {"type": "boolean"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
        "error": {**STRING, "description": "Why the tool could not check (missing, crashed...)"},
        "install": {**STRING, "description": "With error, for a missing tool: how to install it"},
        "durationMs": {"type": "integer"},
    },
}

PARAMS: Final = (Param("tool", description="Run only this validator; default: all"),)


def measure_progress(payload: Any, count: int) -> tuple[float, float | None, str]:
    """
    How far a run of the validators is by one C{validation} payload: how
    many validators finished, and how the last one went.
    """
    result = payload["validation"]
    outcome = "passed" if result["passed"] else f"failed ({len(result['errors'])} errors)"
    return count, None, f"{result['tool']} {outcome}"


def validate_operation(run: Callable[..., Any]) -> Operation:
    """
    The one declaration of the validate operation: C{run} is the
    C{validation.run} procedure, called with C{{tool}} or nothing, and
    C{progress} when the caller takes it.
    """

    def call(progress: Callable[[Any], None] | None = None, **values: Any) -> Any:
        return run({"tool": values["tool"]} if "tool" in values else None, progress=progress)

    return Operation(
        call,
        "Run the validators and answer with their results",
        paths=("/api/validate",),
        procedure="validation.run",
        params=PARAMS,
        data={"type": "array", "items": {"$ref": "#/components/schemas/Validation"}},
        mutates=False,
        progress=measure_progress,
        tags=("validation",),
        schemas={"Validation": VALIDATION, "ValidationError": ERROR},
    )
