"""
The files and git API of a server: one operations layer over the
workspace, served as HTTP routes and as C{invoke} procedures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluso_router.web.routes import install_openapi, install_operations
from cluso_router.workspace.file_routes import file_operations
from cluso_router.workspace.files import FileOperations
from cluso_router.workspace.git import GitOperations, GitRunner
from cluso_router.workspace.git_routes import git_operations
from cluso_router.workspace.paths import Workspace

if TYPE_CHECKING:
    from cluso_router.service import ClusoService


@dataclass(frozen=True)
class WorkspaceApi:
    workspace: Workspace
    files: FileOperations
    git: GitOperations


def install_workspace_api(service: ClusoService, reactor: Any) -> WorkspaceApi:
    """
    Build the operations for C{service}'s root, mount their routes and
    C{/api/openapi.json}, and register their procedures on its router.
    File changes are announced through the service's ledger, git events
    through its broadcaster.
    """
    workspace = Workspace(service.config.root)
    files = FileOperations(workspace, service.file_changes, reactor=reactor)
    git = GitOperations(
        GitRunner(workspace.root, reactor=reactor),
        workspace,
        service.broadcaster,
        service.file_changes,
    )
    root = service.root_resource
    install_operations(root, service.router, [*file_operations(files), *git_operations(git)])
    install_openapi(root)
    return WorkspaceApi(workspace, files, git)
