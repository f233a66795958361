"""
C{GET /api/diagnostics}: the current diagnostics of every file and the
state of each language server, for clients that subscribe late; the same
as C{invoke("lsp.getDiagnostics", {file?})}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from twisted.web.resource import Resource

from cluso_router.web.routes import Operation, Param, mount

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
                },
            },
            tags=("diagnostics",),
        ),
        Operation(
            call=manager.touch_file,
            summary="Open a file in the language servers for its kind (starting them)",
            paths=("/api/lsp/touch",),
            procedure="lsp.touchFile",
            params=(Param("file", required=True, description=file.description),),
            tags=("diagnostics",),
        ),
    ]


def mount_diagnostics(
    root: Resource | None, router: Any, manager: LanguageServerManager
) -> Callable[[], None]:
    """
    Register the procedures, and serve the routes when there is a C{root};
    return what undoes both.
    """
    operations = diagnostics_operations(manager)
    procedures = [op.procedure for op in operations if op.procedure is not None]
    for operation in operations:
        router.register(operation.procedure, operation.procedure_callable())
    api = root.getStaticEntity(b"api") if root is not None else None
    mounted = None
    if root is not None and api is not None:
        for operation in operations:
            mount(root, operation)
        mounted = api.getStaticEntity(b"diagnostics")

    def unmount() -> None:
        for name in procedures:
            router.procedures.unregister(name)
        if api is None or mounted is None:
            return
        if api.getStaticEntity(b"diagnostics") is mounted:
            api.delEntity(b"diagnostics")
        lsp = api.getStaticEntity(b"lsp")
        if lsp is not None and lsp.getStaticEntity(b"touch") is not None:
            lsp.delEntity(b"touch")

    return unmount
