"""
Which language server runs for which files: C{--lsp LANG=COMMAND}.

C{LANG} is a known language name (its file extensions are known here) or
C{NAME:.ext1,.ext2} for any other server. C{COMMAND} is split like a shell
would split it, but is run without a shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cluso_router._process import ExecutableNotFound, find_executable, python_scripts_dirs

#: Extensions served by each known language's server.
KNOWN_LANGUAGES: Final[Mapping[str, tuple[str, ...]]] = {
    "python": (".py", ".pyi"),
    "typescript": (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs"),
    "javascript": (".js", ".jsx", ".mjs", ".cjs"),
    "go": (".go",),
    "rust": (".rs",),
    "c": (".c", ".h"),
    "cpp": (".cc", ".cpp", ".cxx", ".hpp", ".hh", ".h"),
    "lua": (".lua",),
    "ruby": (".rb",),
}

#: Servers used when none is configured, if their command is installed.
DEFAULT_SERVERS: Final[Mapping[str, tuple[str, ...]]] = {
    "python": ("pylsp",),
    "typescript": ("typescript-language-server", "--stdio"),
    "go": ("gopls",),
    "rust": ("rust-analyzer",),
}

#: How to install each default server's command.
INSTALL: Final[Mapping[str, str]] = {
    "pylsp": "pip install 'cluso-router[python]'",
    "typescript-language-server": "npm install -g typescript-language-server typescript",
    "gopls": "go install golang.org/x/tools/gopls@latest",
    "rust-analyzer": "rustup component add rust-analyzer",
}

#: The LSP C{languageId} of a document, by extension.
LANGUAGE_IDS: Final[Mapping[str, str]] = {
    ".py": "python",
    ".pyi": "python",
    ".ts": "typescript",
    ".tsx": "typescriptreact",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascriptreact",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".lua": "lua",
    ".rb": "ruby",
}


@dataclass(frozen=True)
class LanguageServerConfig:
    language: str
    command: tuple[str, ...]
    extensions: tuple[str, ...]

    def serves(self, path: str) -> bool:
        return path.lower().endswith(self.extensions)


def parse_lsp_option(value: str) -> LanguageServerConfig:
    """
    Parse one C{--lsp} value, e.g. C{python=pylsp} or
    C{lua:.lua=lua-language-server}.

    @raise ValueError: naming what is wrong with C{value}.
    """
    spec, sep, command_line = value.partition("=")
    if not sep or not spec.strip() or not command_line.strip():
        raise ValueError(f"--lsp wants LANG=COMMAND, got {value!r}")
    language, colon, extension_list = spec.strip().partition(":")
    language = language.lower()
    if colon:
        extensions = tuple(
            e if e.startswith(".") else "." + e
            for e in (x.strip().lower() for x in extension_list.split(","))
            if e
        )
    else:
        extensions = KNOWN_LANGUAGES.get(language, ())
    if not extensions:
        known = ", ".join(sorted(KNOWN_LANGUAGES))
        raise ValueError(
            f"unknown language {language!r} for --lsp; use one of {known}, "
            f"or NAME:.ext1,.ext2=COMMAND"
        )
    try:
        command = tuple(shlex.split(command_line))
    except ValueError as e:
        raise ValueError(f"--lsp {value!r}: {e}") from None
    return LanguageServerConfig(language, command, extensions)


def find_command(name: str) -> str | None:
    """
    Where command C{name} is: beside this Python (so servers installed in
    the server's own environment are found without activating it), else
    on C{PATH}.
    """
    try:
        return find_executable(name, python_scripts_dirs())
    except ExecutableNotFound:
        return None


def default_configs() -> list[LanguageServerConfig]:
    """
    A config for each default server whose command is installed.
    """
    found = []
    for language, command in DEFAULT_SERVERS.items():
        if find_command(command[0]):
            found.append(LanguageServerConfig(language, command, KNOWN_LANGUAGES[language]))
    return found


def missing_defaults() -> list[dict[str, str]]:
    """
    The default servers that are not installed, with how to install each.
    """
    return [
        {"language": language, "command": command[0], "install": INSTALL[command[0]]}
        for language, command in DEFAULT_SERVERS.items()
        if not find_command(command[0])
    ]


def language_id(path: str) -> str:
    dot = path.rfind(".")
    return LANGUAGE_IDS.get(path[dot:].lower(), "plaintext") if dot >= 0 else "plaintext"
