"""
The files a search covers, chosen by the rules C{rg --files
--no-require-git} follows (those of ripgrep's C{ignore} crate):

  1. an exclusion glob given with C{--iglob !GLOB} (any case) leaves a
     path out before anything else is asked;
  2. then ignore files decide: C{.rgignore} over C{.ignore} over
     C{.gitignore} over the repository's C{info/exclude} over git's global
     excludes file; within each kind the deepest directory with a matching
     line decides, and within a file the last matching line (a C{!line}
     brings a path back);
  3. a path no ignore file mentions is left out when hidden (its name
     starts with a dot);
  4. symbolic links are not followed, and only regular files are listed.

Ignore files of the directories above the start apply too, up to the
filesystem root, as ripgrep 15 applies them with C{--no-require-git}.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from pathspec import GitIgnoreSpec

#: Per-directory ignore files, strongest first.
IGNORE_FILES: Final = (".rgignore", ".ignore", ".gitignore")
#: Kinds of rules in their order of precedence.
KINDS: Final = (*IGNORE_FILES, "exclude", "global")
#: The entries of a directory that bring rules.
_RULE_NAMES: Final = frozenset({*IGNORE_FILES, ".git"})
#: Characters that make an exclusion glob more than a plain name.
_GLOB_CHARS: Final = frozenset("*?[]/\\!")
_EXCLUDES_FILE: Final = re.compile(
    r"""^\s*excludesfile\s*=\s*"?\s*(\S+?)\s*"?\s*$""", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class Rules:
    """
    The lines of one ignore file, for paths below C{base} (an absolute
    directory).
    """

    kind: int
    base: str
    spec: GitIgnoreSpec

    def check(self, path: str, is_dir: bool) -> bool | None:
        """
        C{True} if absolute C{path} is ignored here, C{False} if a C{!}
        line brings it back, C{None} if no line matches it.
        """
        relative = path[len(self.base) :].lstrip("/")
        result = self.spec.check_file(relative + "/" if is_dir else relative)
        return result.include


class Chain:
    """
    The rules in force in one directory: its own ignore files and those of
    every directory above it, deepest first within each kind.
    """

    def __init__(self, rules: Sequence[Rules] = ()) -> None:
        self.rules = tuple(sorted(rules, key=lambda r: (r.kind, -len(r.base))))

    def below(self, directory: str, names: frozenset[str] | set[str]) -> Chain:
        """
        The chain for the entries of C{directory}, which holds C{names}:
        these rules and its own ignore files.
        """
        found = read_rules(directory, names) if not _RULE_NAMES.isdisjoint(names) else []
        return Chain((*self.rules, *found)) if found else self

    def ignored(self, path: str, is_dir: bool) -> bool | None:
        for rules in self.rules:
            decision = rules.check(path, is_dir)
            if decision is not None:
                return decision
        return None


def read_rules(directory: str, names: frozenset[str] | set[str] = _RULE_NAMES) -> list[Rules]:
    """
    The ignore files in C{directory}, and the C{info/exclude} of the git
    repository whose work tree it is; only C{names} are looked for.
    """
    found = []
    for kind, name in enumerate(IGNORE_FILES):
        spec = _read_spec(os.path.join(directory, name)) if name in names else None
        if spec is not None:
            found.append(Rules(kind, directory, spec))
    git_dir = _git_common_dir(directory) if ".git" in names else None
    if git_dir is not None:
        spec = _read_spec(os.path.join(git_dir, "info", "exclude"))
        if spec is not None:
            found.append(Rules(KINDS.index("exclude"), directory, spec))
    return found


def _read_spec(path: str) -> GitIgnoreSpec | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    try:
        return GitIgnoreSpec.from_lines(lines)
    except ValueError:
        # ripgrep skips a line it cannot read and keeps the others.
        return GitIgnoreSpec.from_lines([line for line in lines if _valid(line)])


def _valid(line: str) -> bool:
    try:
        GitIgnoreSpec.from_lines([line])
    except ValueError:
        return False
    return True


def _git_common_dir(directory: str) -> str | None:
    """
    The git directory shared by the repository whose work tree is
    C{directory}: its C{.git}, or for a linked worktree (a C{.git} file
    naming its own git directory) the main repository's.
    """
    dot_git = os.path.join(directory, ".git")
    if os.path.isdir(dot_git):
        return dot_git
    try:
        with open(dot_git, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return None
    if not first.startswith("gitdir:"):
        return None
    git_dir = os.path.join(directory, first.removeprefix("gitdir:").strip())
    try:
        with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as f:
            return os.path.normpath(os.path.join(git_dir, f.read().strip()))
    except OSError:
        return git_dir


def global_rules(root: str, environ: dict[str, str] | None = None) -> list[Rules]:
    """
    Git's global excludes file (C{core.excludesFile}, else
    C{$XDG_CONFIG_HOME/git/ignore}), for paths below C{root}, found the way
    ripgrep finds it.
    """
    env = os.environ if environ is None else environ
    home = env.get("HOME", os.path.expanduser("~"))
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    path = os.path.join(config_home, "git", "ignore")
    for config in (os.path.join(home, ".gitconfig"), os.path.join(config_home, "git", "config")):
        try:
            with open(config, encoding="utf-8", errors="replace") as f:
                match = _EXCLUDES_FILE.search(f.read())
        except OSError:
            continue
        if match:
            named = match.group(1)
            path = os.path.join(home, named[2:]) if named.startswith("~/") else named
            break
    spec = _read_spec(path)
    return [] if spec is None else [Rules(KINDS.index("global"), root, spec)]


class Walker:
    """
    Lists the files under one start path, as C{rg --files} would from the
    current directory.

    @ivar errors: messages about directories that could not be read.
    """

    def __init__(self, excluded_globs: Sequence[str] = (), cwd: str | None = None) -> None:
        self._cwd = os.path.realpath(cwd or os.getcwd())
        folded = [glob.casefold() for glob in excluded_globs]
        # Plain names (the usual exclusions) are looked up; real globs matched.
        self._excluded_names = {g for g in folded if _GLOB_CHARS.isdisjoint(g)}
        globs = [g for g in folded if g not in self._excluded_names]
        self._excluded = GitIgnoreSpec.from_lines(globs) if globs else None
        self.errors: list[str] = []

    def files(self, start: str | None = None) -> Iterator[str]:
        """
        The files chosen under C{start} (relative to the current
        directory; none: the current directory, listed without a C{./}).
        A file named as C{start} is listed as it is, as ripgrep does.
        """
        shown = start.rstrip("/") if start else ""
        absolute = os.path.normpath(os.path.join(self._cwd, shown)) if shown else self._cwd
        if os.path.isfile(absolute):
            yield shown
            return
        chain = Chain([*self._above(absolute), *global_rules(self._cwd)])
        yield from self._walk(absolute, shown, chain)

    def _above(self, directory: str) -> list[Rules]:
        rules: list[Rules] = []
        parent = os.path.dirname(directory)
        while True:
            rules += read_rules(parent)
            if os.path.dirname(parent) == parent:
                return rules
            parent = os.path.dirname(parent)

    def _walk(self, directory: str, shown: str, chain: Chain) -> Iterator[str]:
        pending = [(directory, shown, chain)]
        while pending:
            directory, shown, chain = pending.pop()
            try:
                with os.scandir(directory) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError as e:
                self.errors.append(f"{shown or '.'}: {e.strerror}")
                continue
            chain = chain.below(directory, {entry.name for entry in entries})
            below = []
            for entry in entries:
                relative = f"{shown}/{entry.name}" if shown else entry.name
                if entry.is_symlink():
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir and not entry.is_file(follow_symlinks=False):
                    continue
                if not self._chosen(entry.path, entry.name, relative, is_dir, chain):
                    continue
                if is_dir:
                    below.append((entry.path, relative, chain))
                else:
                    yield relative
            pending += reversed(below)

    def _chosen(self, path: str, name: str, relative: str, is_dir: bool, chain: Chain) -> bool:
        if name.casefold() in self._excluded_names:
            return False
        if self._excluded is not None:
            folded = relative.casefold()
            if self._excluded.match_file(folded + "/" if is_dir else folded):
                return False
        ignored = chain.ignored(path, is_dir)
        if ignored is not None:
            return not ignored
        return not name.startswith(".")
