"""
Which validators a workspace has, and what their output means.

What runs is decided by the server, never by the workspace: a command
comes either from the known tools below (ruff, mypy, tsc, eslint, with
fixed arguments) or from the server's own configuration file
(C{--validation-config}, which must lie outside the served root, so no
client can write it). The workspace's C{cluso.toml} (table C{[validation]})
or C{pyproject.toml} (table C{[tool.cluso.validation]}) may only choose
among those tools and tune them (enable, disable, triggers, timeouts); a
C{command} or C{parser} there is refused.

Without configuration the known tools are detected from the project: ruff
for Python, C{tsc --noEmit} and eslint when C{package.json} names them.
Each tool's machine-readable output is parsed into C{{file, line, column,
message, rule}} errors.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from cluso_router._json import loads

DEFAULT_DEBOUNCE: Final = 0.5
DEFAULT_TIMEOUT: Final = 120.0
TYPES: Final = ("lint", "typecheck", "format")
CONFIG_FILES: Final = ("cluso.toml", "pyproject.toml")
PYTHON_MARKERS: Final = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")

Error = dict[str, Any]


class ConfigError(ValueError):
    """
    The validation configuration cannot be used; the message names the file.
    """


class OutputError(ValueError):
    """
    A tool's output is not what its parser expects (it crashed, or it was
    misconfigured); the message says what it printed.
    """


@dataclass(frozen=True)
class Validator:
    """
    One tool to run: its command (an argument list run in the root), what
    kind of check it is, how to read its output, which changed files make
    it run again (C{.gitignore}-style globs; empty for any change), and how
    long it may take.
    """

    name: str
    command: tuple[str, ...]
    type: str
    parser: str
    triggers: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ValidationConfig:
    validators: tuple[Validator, ...]
    debounce: float = DEFAULT_DEBOUNCE
    #: The file the configuration came from, if any (root-relative).
    source: str | None = None

    def named(self, name: str) -> Validator | None:
        for validator in self.validators:
            if validator.name == name:
                return validator
        return None


PYTHON_TRIGGERS: Final = ("*.py", "*.pyi", "pyproject.toml", "ruff.toml", ".ruff.toml")
SCRIPT_TRIGGERS: Final = ("*.ts", "*.tsx", "*.js", "*.jsx", "*.mjs", "*.cjs", "*.mts", "*.cts")

#: The tools a workspace may name, each with the only command it runs.
KNOWN: Final[Mapping[str, Validator]] = {
    "ruff": Validator(
        "ruff",
        ("ruff", "check", "--output-format=json", "--no-cache", "."),
        "lint",
        "ruff",
        PYTHON_TRIGGERS,
    ),
    "mypy": Validator(
        "mypy",
        ("mypy", "--show-column-numbers", "--no-error-summary", "--no-pretty", "."),
        "typecheck",
        "mypy",
        ("*.py", "*.pyi", "pyproject.toml", "mypy.ini", "setup.cfg"),
    ),
    "tsc": Validator(
        "tsc",
        ("tsc", "--noEmit", "--pretty", "false"),
        "typecheck",
        "tsc",
        (*SCRIPT_TRIGGERS, "tsconfig*.json"),
    ),
    "eslint": Validator(
        "eslint",
        ("eslint", "--format", "json", "."),
        "lint",
        "eslint",
        (*SCRIPT_TRIGGERS, "eslint.config.*", ".eslintrc*"),
    ),
}


def detect(root: str) -> list[Validator]:
    """
    The known tools a project of this shape would want, from marker files
    at its root only (cheap enough to run on every change).
    """
    found: list[Validator] = []
    names = set(os.listdir(root))
    if any(m in names for m in PYTHON_MARKERS) or any(n.endswith(".py") for n in names):
        found.append(KNOWN["ruff"])
    if "package.json" in names:
        packages = _package_names(os.path.join(root, "package.json"))
        if "typescript" in packages:
            found.append(KNOWN["tsc"])
        if "eslint" in packages:
            found.append(KNOWN["eslint"])
    return found


def _package_names(path: str) -> set[str]:
    try:
        with open(path, encoding="utf-8") as f:
            manifest = loads(f.read())
    except (OSError, ValueError):
        return set()
    names: set[str] = set()
    if isinstance(manifest, dict):
        for key in ("dependencies", "devDependencies"):
            table = manifest.get(key)
            if isinstance(table, dict):
                names.update(table)
    return names


@dataclass(frozen=True)
class ServerTools:
    """
    What the server's own validation configuration adds: tools with any
    command, and directories to look executables up in.
    """

    tools: tuple[Validator, ...] = ()
    path: tuple[str, ...] = ()
    source: str | None = None


def load_server_config(file: str | None, root: str) -> ServerTools:
    """
    The server's validation configuration file: a C{[validation]} table
    with C{path} (directories searched for executables, before C{PATH}) and
    C{tools.<name>} tables (C{command}, C{type}, C{parser}, C{triggers},
    C{timeout}), as the workspace file but with commands.

    @raise ConfigError: the file is unreadable, wrong, or inside C{root}
        (where the files API could rewrite it).
    """
    if file is None:
        return ServerTools()
    real = os.path.realpath(file)
    if os.path.commonpath([real, os.path.realpath(root)]) == os.path.realpath(root):
        raise ConfigError(
            f"{file}: the validation configuration must lie outside the served root, "
            "where clients cannot write it"
        )
    try:
        with open(real, "rb") as f:
            document = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{file}: {e}") from None
    table = document.get("validation", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [validation] must be a table")
    unknown = sorted(set(table) - {"path", "tools", "timeout"})
    if unknown:
        raise ConfigError(f"{file}: unknown settings {', '.join(unknown)}")
    path = table.get("path", [])
    if not isinstance(path, list) or not all(isinstance(d, str) and d for d in path):
        raise ConfigError(f"{file}: path must be a list of directories")
    timeout = _seconds(table, "timeout", DEFAULT_TIMEOUT, file)
    configured = table.get("tools", {})
    if not isinstance(configured, dict):
        raise ConfigError(f"{file}: tools must be a table of tables")
    tools = []
    for name, settings in configured.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{file}: tools.{name} must be a table")
        tools.append(_tool(name, settings, KNOWN.get(name), timeout, f"{file}: {name}"))
    return ServerTools(tuple(tools), tuple(os.path.expanduser(d) for d in path), file)


def load(root: str, server: ServerTools | None = None) -> ValidationConfig:
    """
    The validators of the workspace at C{root}: the server's tools and the
    detected known ones, as the workspace's configuration chooses and tunes
    them.

    @raise ConfigError: the workspace file is unreadable or wrong, or
        asks for a command.
    """
    server = server or ServerTools()
    source, table = _configuration(root)
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: the validation settings must be a table")
    where = source or "validation settings"
    detected = table.get("detect", True)
    if not isinstance(detected, bool):
        raise ConfigError(f"{where}: detect must be true or false")
    timeout = _seconds(table, "timeout", DEFAULT_TIMEOUT, where)
    offered = {v.name: v for v in server.tools}
    tools = {v.name: replace(v, timeout=timeout) for v in (detect(root) if detected else [])}
    tools.update(offered)
    configured = table.get("tools", {})
    if not isinstance(configured, dict):
        raise ConfigError(f"{where}: tools must be a table of tables")
    for name, settings in configured.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: tools.{name} must be a table")
        if settings.get("enabled", True) is False:
            tools.pop(name, None)
            continue
        ruled = sorted({"command", "parser", "type"} & set(settings))
        if ruled:
            raise ConfigError(
                f"{where}: {name}: {', '.join(ruled)} can only be set in the server's "
                "--validation-config file; a workspace chooses among the known tools "
                f"({', '.join(sorted({*KNOWN, *offered}))}) and tunes their triggers and timeout"
            )
        base = tools.get(name) or offered.get(name) or KNOWN.get(name)
        if base is None:
            raise ConfigError(
                f"{where}: {name} is not a known tool ({', '.join(sorted({*KNOWN, *offered}))}); "
                "other tools come from the server's --validation-config file"
            )
        tools[name] = _tool(name, settings, base, timeout, f"{where}: {name}")
    return ValidationConfig(
        tuple(tools.values()), _seconds(table, "debounce", DEFAULT_DEBOUNCE, where), source
    )


def _configuration(root: str) -> tuple[str | None, Any]:
    places = (("cluso.toml", ("validation",)), ("pyproject.toml", ("tool", "cluso", "validation")))
    for name, path in places:
        file = os.path.join(root, name)
        try:
            with open(file, "rb") as f:
                document = tomllib.load(f)
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{name}: {e}") from None
        table: Any = document
        for key in path:
            table = table.get(key) if isinstance(table, dict) else None
        if table is not None:
            return name, table
    return None, {}


def _tool(
    name: str, settings: Mapping[str, Any], base: Validator | None, timeout: float, where: str
) -> Validator:
    known = {"command", "type", "parser", "triggers", "timeout", "enabled"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown settings {', '.join(unknown)}")
    command = settings.get("command", base.command if base else None)
    if (
        not isinstance(command, list | tuple)
        or not command
        or not all(isinstance(a, str) and a for a in command)
    ):
        raise ConfigError(f"{where}: command must be a non-empty list of strings")
    type = settings.get("type", base.type if base else None)
    if type not in TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}")
    parser = settings.get("parser", base.parser if base else None)
    if parser not in PARSERS:
        raise ConfigError(f"{where}: parser must be one of {', '.join(sorted(PARSERS))}")
    triggers = settings.get("triggers", base.triggers if base else ())
    if not isinstance(triggers, list | tuple) or not all(isinstance(t, str) for t in triggers):
        raise ConfigError(f"{where}: triggers must be a list of globs")
    default_timeout = base.timeout if base else timeout
    return Validator(
        name,
        tuple(command),
        type,
        parser,
        tuple(triggers),
        _seconds(settings, "timeout", default_timeout, where),
    )


def _seconds(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number of seconds")
    return float(value)


# Parsers: (exit code, stdout, stderr, root) -> (passed, errors).
# They raise OutputError when the output shows the tool did not do its job.

Parser = Callable[[int, str, str, str], tuple[bool, list[Error]]]


def _error(file: str, line: int, column: int, message: str, rule: str | None) -> Error:
    return {"file": file, "line": line, "column": column, "message": message, "rule": rule}


def _relative(path: str, root: str) -> str:
    if os.path.isabs(path):
        path = os.path.relpath(path, root)
    return path.replace(os.sep, "/")


def _json_output(code: int, stdout: str, stderr: str, ok: tuple[int, ...]) -> Any:
    if code not in ok:
        raise OutputError(_said(code, stderr or stdout))
    try:
        return loads(stdout)
    except ValueError:
        raise OutputError(_said(code, stderr or stdout, "printed no JSON")) from None


def _said(code: int, output: str, what: str | None = None) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-10:]) or "no output"
    return f"{what or f'exited with code {code}'}: {tail}"


def parse_ruff(code: int, stdout: str, stderr: str, root: str) -> tuple[bool, list[Error]]:
    """
    C{ruff check --output-format=json}: exit 0 clean, 1 with violations.
    """
    items = _json_output(code, stdout, stderr, (0, 1))
    errors = [
        _error(
            _relative(item["filename"], root),
            item["location"]["row"],
            item["location"]["column"],
            item["message"],
            item.get("code"),
        )
        for item in items
    ]
    return not errors, errors


def parse_eslint(code: int, stdout: str, stderr: str, root: str) -> tuple[bool, list[Error]]:
    """
    C{eslint --format json}: exit 0 clean, 1 with errors; warnings
    (severity 1) are not errors.
    """
    files = _json_output(code, stdout, stderr, (0, 1))
    errors = [
        _error(
            _relative(file["filePath"], root),
            message.get("line", 0),
            message.get("column", 0),
            message["message"],
            message.get("ruleId"),
        )
        for file in files
        for message in file["messages"]
        if message.get("severity") == 2
    ]
    return not errors, errors


_MYPY: Final = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:(?P<column>\d+):)? error: "
    r"(?P<message>.*?)(?:  \[(?P<rule>[\w-]+)\])?$"
)
_TSC: Final = re.compile(
    r"^(?P<file>.+)\((?P<line>\d+),(?P<column>\d+)\): error (?P<rule>TS\d+): (?P<message>.*)$"
)
_TSC_GLOBAL: Final = re.compile(r"^error (?P<rule>TS\d+): (?P<message>.*)$")


def _line_errors(pattern: re.Pattern[str], stdout: str, root: str) -> list[Error]:
    errors = []
    for line in stdout.splitlines():
        match = pattern.match(line)
        if match:
            errors.append(
                _error(
                    _relative(match["file"], root),
                    int(match["line"]),
                    int(match["column"] or 0),
                    match["message"],
                    match["rule"],
                )
            )
    return errors


def parse_mypy(code: int, stdout: str, stderr: str, root: str) -> tuple[bool, list[Error]]:
    """
    mypy's C{file:line:column: error: message  [code]} lines: exit 0 clean,
    1 with errors, 2 when it could not check at all.
    """
    if code not in (0, 1):
        raise OutputError(_said(code, stderr or stdout))
    errors = _line_errors(_MYPY, stdout, root)
    if code == 1 and not errors:
        raise OutputError(_said(code, stdout + stderr, "reported failure without errors"))
    return not errors, errors


def parse_tsc(code: int, stdout: str, stderr: str, root: str) -> tuple[bool, list[Error]]:
    """
    tsc's C{file(line,column): error TSnnnn: message} lines (C{--pretty
    false}); errors about the whole project have no file.
    """
    errors = _line_errors(_TSC, stdout, root)
    for line in stdout.splitlines():
        match = _TSC_GLOBAL.match(line)
        if match:
            errors.append(_error("", 0, 0, match["message"], match["rule"]))
    if code != 0 and not errors:
        raise OutputError(_said(code, stdout + stderr))
    return not errors, errors


def parse_exit_code(code: int, stdout: str, stderr: str, root: str) -> tuple[bool, list[Error]]:
    """
    Any other tool: it passes when it exits 0; otherwise its last lines of
    output are the one error.
    """
    if code == 0:
        return True, []
    return False, [_error("", 0, 0, _said(code, stdout + stderr), None)]


PARSERS: Final[Mapping[str, Parser]] = {
    "ruff": parse_ruff,
    "eslint": parse_eslint,
    "mypy": parse_mypy,
    "tsc": parse_tsc,
    "exitcode": parse_exit_code,
}
