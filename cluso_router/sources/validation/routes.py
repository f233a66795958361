"""
C{POST /api/validate} with C{{tool?}} (or no body): run the workspace's
validators and answer with their results, as C{validation.run} does.
"""

from __future__ import annotations

from typing import Final

from twisted.web.resource import Resource

from cluso_router.router.router import Router
from cluso_router.sources.search.routes import forwarding
from cluso_router.web.routes import STRING, Operation, Param, Schema, install_operations

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
        "durationMs": {"type": "integer"},
    },
}
PARAMS: Final = (Param("tool", description="Run only this validator; default: all"),)


def validate_operation(router: Router) -> Operation:
    return Operation(
        forwarding(router, "validation.run", "validation", PARAMS),
        "Run the validators and answer with their results",
        paths=("/api/validate",),
        params=PARAMS,
        data={"type": "array", "items": {"$ref": "#/components/schemas/Validation"}},
        tags=("validation",),
        schemas={"Validation": VALIDATION, "ValidationError": ERROR},
    )


def mount_validation(root: Resource, router: Router) -> None:
    install_operations(root, router, [validate_operation(router)])
