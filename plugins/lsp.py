"""
The C{lsp} source: diagnostics from language servers on the
C{diagnostics} channel.
"""

import shutil

from cluso_router.sources import SourcePlugin

#: Commands of the servers started by default when installed.
DEFAULT_COMMANDS = ("pylsp", "typescript-language-server", "gopls", "rust-analyzer")


def server_installed(root: str) -> bool:
    return any(shutil.which(command) for command in DEFAULT_COMMANDS)


def lsp_option(value: str) -> object:
    from cluso_router.lsp.config import parse_lsp_option

    return parse_lsp_option(value)


lsp = SourcePlugin(
    name="lsp",
    description="Diagnostics from language servers (pylsp, ...), on the diagnostics channel.",
    service="cluso_router.lsp.make_source",
    options=[
        [
            "lsp",
            None,
            None,
            "Language server for a language, as LANG=COMMAND (e.g. python=pylsp); "
            "default: the known servers found on PATH.",
            lsp_option,
        ],
    ],
    applies=server_installed,
)
