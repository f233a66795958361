"""
C{GET /api/diagnostics}: the current diagnostics of every file and the
state of each language server, for clients that subscribe late; the same
as C{invoke("lsp.getDiagnostics", {file?})}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from cluso_router.web.routes import Operation, Param

if TYPE_CHECKING:
    from cluso_router.sources.lsp.manager import LanguageServerManager

DIAGNOSTIC: Final = {
    "type": "object",
    "required": ["file", "line", "column", "message", "severity", "source"],
    "properties": {
        "file": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "column": {"type": "integer", "minimum": 1},
        "endLine": {"type": "integer"},
        "endColumn": {"type": "integer"},
        "message": {"type": "string"},
        "severity": {"type": "string", "enum": ["error", "warning", "info", "hint"]},
        "source": {"type": "string"},
        "code": {},
    },
}


def diagnostics_operations(manager: LanguageServerManager) -> list[Operation]:
    file = Param("file", description="Root-relative or absolute path inside the root")
    return [
        Operation(
            call=manager.diagnostics,
            summary="Current diagnostics (all files, or one) and the language servers' state",
            paths=("/api/diagnostics",),
            method="GET",
            procedure="lsp.getDiagnostics",
            params=(file,),
            data={
                "type": "object",
                "properties": {
                    "diagnostics": {"type": "array", "items": DIAGNOSTIC},
                    "servers": {"type": "array", "items": {"type": "object"}},
                    "missing": {
                        "type": "array",
                        "description": "Default servers not installed, and how to install each",
                        "items": {
                            "type": "object",
                            "properties": {
                                "language": {"type": "string"},
                                "command": {"type": "string"},
                                "install": {"type": "string"},
                            },
                        },
                    },
                },
            },
            tags=("diagnostics",),
        ),
        Operation(
            call=manager.touch_file,
            summary="Open a file in the language servers for its kind (starting them)",
            paths=("/api/lsp/touch",),
            procedure="lsp.touchFile",
            mutates=False,
            params=(Param("file", required=True, description=file.description),),
            tags=("diagnostics",),
        ),
    ]
