"""
The files, git and backup API of a server: one operations layer over the
workspace, served as HTTP routes and as C{invoke} procedures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.web.resource import Resource

from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.router import Router
from cluso_router.web.routes import install_openapi, install_operations
from cluso_router.workspace.backup_routes import backup_operations
from cluso_router.workspace.backups import BACKUP, BackupOperations, BackupSettings
from cluso_router.workspace.file_routes import file_operations
from cluso_router.workspace.files import DEFAULT_MAX_READ_BYTES, FileOperations
from cluso_router.workspace.git import GIT, GitOperations, GitRunner
from cluso_router.workspace.git_routes import git_operations
from cluso_router.workspace.ledger import FILES, FileChangeLedger
from cluso_router.workspace.paths import Workspace


class WorkspaceApi(Service):
    """
    The files, git and backup operations of one workspace, as a service:
    stopping it stops the walks (globs, trees) still under way, so the
    server's thread pool lets the process end at once.
    """

    name = "workspace"

    def __init__(
        self,
        workspace: Workspace,
        files: FileOperations,
        git: GitOperations,
        backups: BackupOperations,
    ) -> None:
        self.workspace = workspace
        self.files = files
        self.git = git
        self.backups = backups

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
    backup_settings: BackupSettings | None = None,
    ignore: Sequence[str] = (),
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
) -> WorkspaceApi:
    """
    Build the operations for the workspace at C{root}, claim the C{files},
    C{git} and C{backup} channels they publish on, mount their routes and
    C{/api/openapi.json} below C{web_root}, and register their procedures.
    File changes are announced through C{file_changes}, git and backup
    events through C{broadcaster}. Backups are kept as C{backup_settings}
    say (by default in the user's data directory) and leave out the
    C{ignore} patterns.
    """
    workspace = Workspace(root)
    files = FileOperations(workspace, file_changes, reactor=reactor, max_read_bytes=max_read_bytes)
    git = GitOperations(
        GitRunner(workspace.root, reactor=reactor), workspace, broadcaster, file_changes
    )
    backups = BackupOperations(
        workspace,
        backup_settings or BackupSettings(),
        broadcaster,
        file_changes,
        ignore,
        reactor=reactor,
    )
    for spec in (FILES, GIT, BACKUP):
        router.claims.claim(spec, "workspace")
    install_operations(
        web_root,
        router,
        [*file_operations(files), *git_operations(git), *backup_operations(backups)],
    )
    install_openapi(web_root)
    return WorkspaceApi(workspace, files, git, backups)
