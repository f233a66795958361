"""
The C{/api/backup/*} routes and C{backup.*} procedures, declared over
L{BackupOperations}.

The original registered C{DELETE /:backupId} before C{DELETE /cleanup}, so
its router read C{cleanup} as a (malformed) backup id and the route was
never reached. Here a named route always wins over a path parameter, so
C{DELETE /api/backup/cleanup} is the cleanup.
"""

from __future__ import annotations

from functools import partial
from typing import Final

from cluso_router.web.routes import MESSAGE, STRING, TIMESTAMP, Operation, Param, Schema
from cluso_router.workspace.backup_store import BACKUP_ID
from cluso_router.workspace.backups import BackupOperations

TAGS: Final = ("backup",)
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}

SCHEMAS: Final[dict[str, Schema]] = {
    "Backup": {
        "type": "object",
        "required": ["id", "description", "createdAt", "files", "totalBytes", "automatic"],
        "properties": {
            "id": {"type": "string", "pattern": BACKUP_ID.pattern},
            "description": STRING,
            "createdAt": TIMESTAMP,
            "files": {
                "type": "array",
                "items": STRING,
                "description": "Root-relative paths, / separated, sorted",
            },
            "totalBytes": COUNT,
            "automatic": {
                "type": "boolean",
                "description": "Taken by the server just before a restore",
            },
        },
    },
}

BACKUP_REF: Final[Schema] = {"$ref": "#/components/schemas/Backup"}

ID: Final = Param(
    "backupId",
    {"type": "string"},
    required=True,
    description="YYYYMMDDHHMMSS-xxxxxx, as listed",
    aliases=("id", "backupName"),
    location="path",
)


def backup_operations(ops: BackupOperations) -> list[Operation]:
    op = partial(Operation, tags=TAGS, schemas=SCHEMAS)
    return [
        op(
            ops.create,
            "Snapshot the project's files (as .gitignore allows, secrets never)",
            paths=("/api/backup/create",),
            procedure="backup.create",
            params=(Param("description", required=True, description="What it is for"),),
            data=BACKUP_REF,
        ),
        op(
            ops.list_backups,
            "Every backup of the project, newest first",
            paths=("/api/backup/list",),
            method="GET",
            procedure="backup.list",
            data={
                "type": "object",
                "required": ["backups"],
                "properties": {"backups": {"type": "array", "items": BACKUP_REF}},
            },
        ),
        op(
            ops.restore,
            "Put a backup's files back, after saving the current state as a backup",
            paths=("/api/backup/restore/{backupId}",),
            procedure="backup.restore",
            params=(
                ID,
                Param(
                    "prune",
                    {"type": "boolean"},
                    description="Also delete files the backup does not have; default false",
                ),
            ),
            data={
                "type": "object",
                "required": ["message", "id", "undoId", "changed", "unchanged"],
                "properties": {
                    "message": STRING,
                    "id": STRING,
                    "undoId": {**STRING, "description": "The backup of the state before"},
                    "changed": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["file", "event"],
                            "properties": {
                                "file": STRING,
                                "event": {
                                    "type": "string",
                                    "enum": ["add", "change", "unlink", "addDir"],
                                },
                            },
                        },
                    },
                    "unchanged": COUNT,
                },
            },
        ),
        op(
            ops.get_content,
            "One file of a backup, as UTF-8 text (invalid bytes become U+FFFD)",
            paths=("/api/backup/content/{backupId}",),
            method="GET",
            procedure="backup.getContent",
            params=(
                ID,
                Param(
                    "file",
                    required=True,
                    description="A path the backup lists",
                    location="query",
                ),
            ),
            data={"type": "object", "required": ["content"], "properties": {"content": STRING}},
        ),
        op(
            ops.delete,
            "Delete one backup",
            paths=("/api/backup/{backupId}",),
            method="DELETE",
            procedure="backup.delete",
            params=(ID,),
            data=MESSAGE,
        ),
        op(
            ops.cleanup,
            "Delete every backup of the project",
            paths=("/api/backup/cleanup",),
            method="DELETE",
            procedure="backup.cleanup",
            data={
                "type": "object",
                "required": ["message", "count"],
                "properties": {"message": STRING, "count": COUNT},
            },
        ),
    ]
