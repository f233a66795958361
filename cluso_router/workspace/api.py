"""
The files and git API of a server: one operations layer over the
workspace, served as HTTP routes and as C{invoke} procedures.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
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


class WorkspaceApi(Service):
    """
    The files and git operations of one workspace, as a service: stopping
    it stops the walks (globs, trees) still under way, so the server's
    thread pool lets the process end at once.
    """

    name = "workspace"

    def __init__(self, workspace: Workspace, files: FileOperations, git: GitOperations) -> None:
        self.workspace = workspace
        self.files = files
        self.git = git

    def stopService(self) -> None:
        super().stopService()
        self.files.cancel_walks()


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
