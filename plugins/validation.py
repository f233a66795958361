"""
The C{validation} source: linters and type checkers, results on the
C{validation} channel.
"""

from cluso_router.sources import SourcePlugin


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


validation = SourcePlugin(
    name="validation",
    description="Linters and type checkers (ruff, tsc, eslint, ...), on the validation channel.",
    service="cluso_router.sources.validation.service.make_source",
    options=[
        ["validate-on-change", None, False, "Run the validators after file changes (debounced)."],
        [
            "validation-config",
            None,
            None,
            "A TOML file outside the root with validator commands ([validation.tools.NAME]) "
            "and executable directories ([validation] path); the workspace may only choose "
            "among these and the known tools.",
        ],
    ],
    applies=has_validators,
)
