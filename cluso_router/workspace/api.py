"""
The files and git API of a server: one operations layer over the
workspace, served as HTTP routes and as C{invoke} procedures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.web.resource import Resource

from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.router import Router
from cluso_router.web.routes import install_openapi, install_operations
from cluso_router.workspace.file_routes import file_operations
from cluso_router.workspace.files import FileOperations
from cluso_router.workspace.git import GIT, GitOperations, GitRunner
from cluso_router.workspace.git_routes import git_operations
from cluso_router.workspace.ledger import FILES, FileChangeLedger
from cluso_router.workspace.paths import Workspace


@dataclass(frozen=True)
class WorkspaceApi:
    workspace: Workspace
    files: FileOperations
    git: GitOperations


def install_workspace_api(
    root: str,
    router: Router,
    broadcaster: Broadcaster,
    file_changes: FileChangeLedger,
    web_root: Resource,
    reactor: Any,
) -> WorkspaceApi:
    """
    Build the operations for the workspace at C{root}, claim the C{files}
    and C{git} channels they publish on, mount their routes and
    C{/api/openapi.json} below C{web_root}, and register their procedures.
    File changes are announced through C{file_changes}, git events through
    C{broadcaster}.
    """
    workspace = Workspace(root)
    files = FileOperations(workspace, file_changes, reactor=reactor)
    git = GitOperations(
        GitRunner(workspace.root, reactor=reactor), workspace, broadcaster, file_changes
    )
    for spec in (FILES, GIT):
        router.claims.claim(spec, "workspace")
    install_operations(web_root, router, [*file_operations(files), *git_operations(git)])
    install_openapi(web_root)
    return WorkspaceApi(workspace, files, git)
