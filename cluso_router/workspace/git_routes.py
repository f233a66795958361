"""
The C{/api/git/*} routes and C{git.*} procedures, declared over
L{GitOperations}.
"""

from __future__ import annotations

from functools import partial
from typing import Final

from cluso_router.web.routes import MESSAGE, STRING, Operation, Param, Schema
from cluso_router.workspace.git import GitOperations

TAGS: Final = ("git",)

STATUS: Final[Schema] = {
    "type": "object",
    "required": ["files", "hasChanges"],
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["status", "file"],
                "properties": {"status": STRING, "file": STRING},
            },
        },
        "hasChanges": {"type": "boolean"},
    },
}


def git_operations(ops: GitOperations) -> list[Operation]:
    op = partial(Operation, tags=TAGS, data=MESSAGE)
    message = Param("message", required=True)
    return [
        op(
            ops.get_current_branch,
            "The checked-out branch, or HEAD when detached",
            paths=("/api/git/current-branch",),
            method="GET",
            procedure="git.getCurrentBranch",
            data={"type": "object", "required": ["branch"], "properties": {"branch": STRING}},
        ),
        op(
            ops.get_branches,
            "Local branches, then remote ones as remotes/<remote>/<name>",
            paths=("/api/git/branches",),
            method="GET",
            procedure="git.getBranches",
            data={
                "type": "object",
                "required": ["branches"],
                "properties": {"branches": {"type": "array", "items": STRING}},
            },
        ),
        op(
            ops.get_status,
            "Changed files as git status --porcelain reports them",
            paths=("/api/git/status",),
            method="GET",
            procedure="git.getStatus",
            data=STATUS,
        ),
        op(
            ops.checkout,
            "Check out a branch",
            paths=("/api/git/checkout",),
            procedure="git.checkout",
            params=(Param("branch", required=True),),
        ),
        op(
            ops.checkout_file,
            "Restore a file from HEAD",
            paths=("/api/git/checkout-file",),
            procedure="git.checkoutFile",
            params=(Param("file", required=True, aliases=("filePath",)),),
        ),
        op(
            ops.create_branch,
            "Create a branch at HEAD and check it out",
            paths=("/api/git/create-branch",),
            procedure="git.createBranch",
            params=(Param("name", required=True),),
        ),
        op(
            ops.commit,
            "Stage everything (add -A) and commit it",
            paths=("/api/git/commit",),
            procedure="git.commit",
            params=(message,),
        ),
        op(
            ops.push,
            "Push the current branch to its upstream",
            paths=("/api/git/push",),
            procedure="git.push",
            read_body=False,
        ),
        op(
            ops.pull,
            "Pull into the current branch",
            paths=("/api/git/pull",),
            procedure="git.pull",
            read_body=False,
        ),
        op(
            ops.stash,
            "Stash local changes, with an optional message",
            paths=("/api/git/stash",),
            procedure="git.stash",
            params=(Param("message"),),
        ),
        op(
            ops.stash_with_message,
            "Stash local changes with a message",
            procedure="git.stashWithMessage",
            params=(message,),
        ),
        op(
            ops.stash_pop,
            "Restore the latest stash",
            paths=("/api/git/stash-pop",),
            procedure="git.stashPop",
            read_body=False,
        ),
    ]
