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
    """
    One or more C{LANG=COMMAND} separated by C{;}.
    """
    from cluso_router.sources.lsp.config import parse_lsp_option

    return [parse_lsp_option(spec) for spec in value.split(";") if spec.strip()]


lsp = SourcePlugin(
    name="lsp",
    description="Diagnostics from language servers (pylsp, ...), on the diagnostics channel.",
    service="cluso_router.sources.lsp.make_source",
    options=[
        [
            "lsp",
            None,
            None,
            "Language servers as LANG=COMMAND, several separated by ';' (e.g. python=pylsp); "
            "default: the known servers found on PATH.",
            lsp_option,
        ],
    ],
    applies=server_installed,
)
