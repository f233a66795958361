"""
The C{lsp} source: diagnostics from language servers on the
C{diagnostics} channel.
"""

from cluso_router.sources import SourcePlugin


def server_installed(root: str) -> bool:
    """
    Whether a default language server is installed, beside this Python or
    on C{PATH}.
    """
    from cluso_router.sources.lsp.config import DEFAULT_SERVERS, find_command

    return any(find_command(command[0]) for command in DEFAULT_SERVERS.values())


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
            "default: the known servers installed (beside Python, or on PATH).",
            lsp_option,
        ],
    ],
    applies=server_installed,
)
