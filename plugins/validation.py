"""
The C{validation} source: linters and type checkers, results on the
C{validation} channel.
"""

from cluso_router.sources import SourceOptions, SourcePlugin


def has_validators(root: str) -> bool:
    """
    On by default where validators are configured or detected (a broken
    configuration counts, so its error gets reported).
    """
    from cluso_router.sources.validation.validators import ConfigError, load

    try:
        return bool(load(root).validators)
    except ConfigError:
        return True


class ValidationOptions(SourceOptions):
    optFlags = [["on-change", None, "Run the validators after file changes (debounced)."]]
    optParameters = [
        [
            "config",
            None,
            None,
            "A TOML file outside the root with validator commands ([validation.tools.NAME]) "
            "and executable directories ([validation] path); the workspace may only choose "
            "among these and the known tools.",
        ],
    ]
    aliases = {"validate-on-change": "on-change"}


validation = SourcePlugin(
    name="validation",
    description="Linters and type checkers (ruff, tsc, eslint, ...), on the validation channel.",
    service="cluso_router.sources.validation.service.make_source",
    options=ValidationOptions,
    applies=has_validators,
)
