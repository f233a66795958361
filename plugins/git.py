"""
The C{git} source: branch, commit and index changes of the root's
repository, on the C{git} channel.
"""

import os

from cluso_router.sources import SourcePlugin


def inside_repository(root: str) -> bool:
    """
    Whether C{root} or a directory above it holds a C{.git} entry (a
    directory, or the file of a linked worktree or submodule).
    """
    path = os.path.realpath(root)
    while True:
        if os.path.exists(os.path.join(path, ".git")):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


git = SourcePlugin(
    name="git",
    description="Branch switches, commits and index changes of the root's git repository.",
    service="cluso_router.sources.git.service.make_source",
    options=[
        [
            "git-delay",
            None,
            0.2,
            "Seconds the repository must stay quiet before its state is read again.",
            float,
        ],
    ],
    applies=inside_repository,
)
