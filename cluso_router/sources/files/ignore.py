"""
Which paths under the root the file watcher leaves out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from pathspec import GitIgnoreSpec

#: Directory names never watched, wherever they are.
ALWAYS_IGNORED: Final = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv"})

#: The file that makes a directory a virtualenv (PEP 405).
VIRTUALENV_MARKER: Final = "pyvenv.cfg"


@dataclass(frozen=True)
class IgnoreRules:
    """
    The built-in names, the root's C{.gitignore} plus C{--ignore} patterns
    (both with git's wildmatch rules), and the virtualenvs found so far.

    Immutable: the reactor replaces the watcher's rules as a whole, so the
    watchdog thread always reads one consistent set.
    """

    patterns: tuple[str, ...] = ()
    virtualenvs: frozenset[str] = frozenset()
    _spec: GitIgnoreSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_spec", GitIgnoreSpec.from_lines(self.patterns))

    @classmethod
    def load(
        cls, root: str, extra: Iterable[str] = (), virtualenvs: frozenset[str] = frozenset()
    ) -> IgnoreRules:
        """
        Rules from C{root}'s C{.gitignore} (if readable) and C{extra}.
        """
        try:
            with open(os.path.join(root, ".gitignore"), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        return cls((*lines, *extra), virtualenvs)

    def with_virtualenvs(self, paths: Iterable[str]) -> IgnoreRules:
        return replace(self, virtualenvs=self.virtualenvs | frozenset(paths))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """
        Whether root-relative C{path} (C{/}-separated) is left out.
        """
        parts = path.split("/")
        if not ALWAYS_IGNORED.isdisjoint(parts):
            return True
        for venv in self.virtualenvs:
            if path == venv or path.startswith(venv + "/"):
                return True
        return self._spec.match_file(path + "/" if is_dir else path)
