"""
The C{/api/files/*} routes and C{files.*} procedures, declared over
L{FileOperations}.
"""

from __future__ import annotations

from functools import partial
from typing import Final

from cluso_router.web.routes import STRING, Operation, Param, Schema
from cluso_router.workspace.files import FileOperations

TAGS: Final = ("files",)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: Final[dict[str, Schema]] = {
    "FileContent": {
        "type": "object",
        "required": ["path", "content", "encoding"],
        "properties": {
            "path": STRING,
            "content": STRING,
            "encoding": {"type": "string", "enum": ["utf-8"]},
        },
    },
    "FileInfo": {
        "type": "object",
        "required": ["name", "path", "isDirectory", "size", "modified"],
        "properties": {
            "name": STRING,
            "path": STRING,
            "isDirectory": {"type": "boolean"},
            "size": {"type": "integer"},
            "modified": STRING,
        },
    },
    "Stat": {
        "type": "object",
        "required": [
            "path",
            "isDirectory",
            "isFile",
            "size",
            "created",
            "modified",
            "accessed",
            "mode",
        ],
        "properties": {
            "path": STRING,
            "isDirectory": {"type": "boolean"},
            "isFile": {"type": "boolean"},
            "size": {"type": "integer"},
            "created": STRING,
            "modified": STRING,
            "accessed": STRING,
            "mode": {"type": "integer"},
        },
    },
    "TreeNode": {
        "type": "object",
        "required": ["name", "path", "isDirectory", "size"],
        "properties": {
            "name": STRING,
            "path": STRING,
            "isDirectory": {"type": "boolean"},
            "size": {"type": "integer"},
            "children": {"type": "array", "items": _ref("TreeNode")},
        },
    },
}

PATH: Final = Param(
    "path", required=True, description="Relative to the root, or absolute inside it"
)


def _echo(*names: str) -> Schema:
    return {
        "type": "object",
        "required": list(names),
        "properties": {name: STRING for name in names},
    }


def file_operations(ops: FileOperations) -> list[Operation]:
    op = partial(Operation, tags=TAGS, schemas=SCHEMAS)
    return [
        op(
            ops.read_file,
            "Read a file as UTF-8 text (invalid bytes become U+FFFD)",
            paths=("/api/files/read",),
            procedure="files.readFile",
            mutates=False,
            params=(PATH,),
            data=_ref("FileContent"),
        ),
        op(
            ops.write_file,
            "Write a whole file atomically, creating parent directories",
            paths=("/api/files/write",),
            procedure="files.writeFile",
            params=(PATH, Param("content", required=True)),
            data={
                "type": "object",
                "required": ["path", "bytesWritten"],
                "properties": {"path": STRING, "bytesWritten": {"type": "integer"}},
            },
        ),
        op(
            ops.create_file,
            "Create a file that must not exist yet",
            paths=("/api/files/create",),
            procedure="files.createFile",
            params=(PATH, Param("content", description="Default: empty")),
            data=_echo("path"),
        ),
        op(
            ops.delete_file,
            "Delete a file (or a symlink itself)",
            paths=("/api/files/delete",),
            procedure="files.deleteFile",
            params=(PATH,),
            data=_echo("path"),
        ),
        op(
            ops.rename_file,
            "Move a file or directory; the destination must not exist",
            paths=("/api/files/rename",),
            procedure="files.renameFile",
            params=(Param("oldPath", required=True), Param("newPath", required=True)),
            data=_echo("oldPath", "newPath"),
        ),
        op(
            ops.copy_file,
            "Copy a file; the destination must not exist",
            paths=("/api/files/copy",),
            procedure="files.copyFile",
            params=(Param("srcPath", required=True), Param("destPath", required=True)),
            data=_echo("srcPath", "destPath"),
        ),
        op(
            ops.get_cwd,
            "The workspace root and its name",
            paths=("/api/files/cwd",),
            method="GET",
            procedure="files.getCwd",
            data=_echo("cwd", "name"),
        ),
        op(
            ops.list_directory,
            "The entries of a directory, in directory order",
            paths=("/api/files/list", "/api/files/list-directory"),
            procedure="files.listDirectory",
            mutates=False,
            params=(Param("path", description="Default: the root"),),
            data={"type": "array", "items": _ref("FileInfo")},
        ),
        op(
            ops.create_directory,
            "Create a directory and its parents; fine if it exists",
            paths=("/api/files/mkdir", "/api/files/create-directory"),
            procedure="files.createDirectory",
            params=(PATH,),
            data=_echo("path"),
        ),
        op(
            ops.delete_directory,
            "Delete a directory recursively (or a file); never the root",
            paths=("/api/files/rmdir", "/api/files/delete-directory"),
            procedure="files.deleteDirectory",
            params=(PATH,),
            data=_echo("path"),
        ),
        op(
            ops.exists,
            "Whether a path exists; false for refused paths",
            paths=("/api/files/exists",),
            procedure="files.exists",
            mutates=False,
            params=(PATH,),
            data={"type": "boolean"},
        ),
        op(
            ops.stat,
            "Metadata of a file or directory",
            paths=("/api/files/stat",),
            procedure="files.stat",
            mutates=False,
            params=(PATH,),
            data=_ref("Stat"),
        ),
        op(
            ops.glob,
            "Paths matching a glob pattern (with {a,b} and **), sorted",
            paths=("/api/files/glob",),
            procedure="files.glob",
            mutates=False,
            params=(
                Param("pattern", required=True),
                Param("dirPath", description="Directory the pattern starts in; default: root"),
            ),
            data={"type": "array", "items": STRING},
        ),
        op(
            ops.get_tree,
            "A directory tree as nested nodes",
            paths=("/api/files/tree",),
            procedure="files.getTree",
            mutates=False,
            params=(
                Param("path", description="Default: the root"),
                Param("maxDepth", {"type": "integer", "minimum": 0}, description="Default: 10"),
                Param(
                    "ignore",
                    {"type": "array", "items": STRING},
                    description="Names to skip; replaces the default list",
                ),
            ),
            data=_ref("TreeNode"),
        ),
    ]
