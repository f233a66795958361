"""
Choosing files by globs, with the syntax of C{.gitignore} lines plus
C{{a,b}} alternatives: C{*.py}, C{src/**/*.{ts,tsx}}, C{!*_test.go}.

ripgrep's own C{--glob} would let a glob select files that C{.gitignore}
excludes; searches apply globs here instead, to the files ripgrep lists
with the ignore rules in force, so a glob only ever narrows a search.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pathspec import GitIgnoreSpec

_BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")


class GlobFilter:
    """
    Whether a C{/}-separated path is chosen by a list of globs: the last
    glob matching it decides (one starting with C{!} excludes); a path no
    glob matches is chosen only when every glob is an exclusion.
    """

    def __init__(self, globs: Iterable[str]) -> None:
        self._specs: list[tuple[bool, GitIgnoreSpec]] = []
        for glob in globs:
            exclude = glob.startswith("!")
            body = glob[1:] if exclude else glob
            self._specs.append((not exclude, GitIgnoreSpec.from_lines(expand(body))))
        self._default = not any(include for include, _ in self._specs)

    def __bool__(self) -> bool:
        return bool(self._specs)

    def __call__(self, path: str) -> bool:
        chosen = self._default
        for include, spec in self._specs:
            if spec.match_file(path):
                chosen = include
        return chosen


def expand(glob: str) -> list[str]:
    """
    C{glob} with each C{{a,b}} alternative written out: C{*.{ts,tsx}} gives
    C{*.ts} and C{*.tsx}.
    """
    match = _BRACES.search(glob)
    if match is None:
        return [glob]
    head, tail = glob[: match.start()], glob[match.end() :]
    return [g for choice in match.group(1).split(",") for g in expand(head + choice + tail)]
