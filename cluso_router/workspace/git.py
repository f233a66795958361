"""
Git operations on the workspace, and the one runner every git call uses.

The runner never involves a shell: it spawns C{git} with an argument list
in the workspace, with prompts and editors disabled and paths unquoted, and
kills and reaps it when its deadline passes. The operations check every
value a client sends before it becomes an argument: refs are validated by
C{git check-ref-format --branch}, a value starting with C{-} is refused,
paths are confined by the L{Workspace} and passed as literal absolute
pathspecs after C{--} (C{:(literal)/abs/path}: no glob or magic), and
messages are attached to their option (C{--message=...}) so they can never
be read as an option of their own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.python.procutils import which

from cluso_router._process import spawn
from cluso_router._reactor import default_reactor
from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelSpec
from cluso_router.router.event import DeliveryReport
from cluso_router.router.procedures import ProcedureError
from cluso_router.workspace.ledger import FileChangeLedger
from cluso_router.workspace.paths import PathRefused, Workspace, check_text, shown

GitEventType = Literal["status", "commit", "push", "pull", "branch"]
GIT_EVENT_TYPES: Final = frozenset({"status", "commit", "push", "pull", "branch"})


def git_key(data: Any) -> str | None:
    """
    C{status} for git status events, the only git events a newer one
    replaces; commits, branch changes, pushes and pulls all reach the client.
    """
    if isinstance(data, dict) and data.get("type") == "status":
        return "status"
    return None


GIT: Final = ChannelSpec(
    "git",
    "The repository changed: status, a commit, a push or pull, a branch switch",
    conflate=git_key,
    schema={
        "type": "object",
        "required": ["type", "message", "timestamp"],
        "properties": {
            "type": {"type": "string", "enum": sorted(GIT_EVENT_TYPES)},
            "message": {"type": "string"},
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=(
        {
            "type": "commit",
            "message": "Commit created: fix",
            "timestamp": "2024-12-09T15:30:45.123Z",
        },
    ),
)


def git_event(broadcaster: Broadcaster, type: GitEventType, message: str) -> DeliveryReport:
    """
    Publish a C{git} event; the original server's C{gitEvent}.
    """
    if type not in GIT_EVENT_TYPES:
        raise ValueError(f"unknown git event type {type!r}")
    return broadcaster.emit_stamped(GIT.channel, {"type": type, "message": message})


DEFAULT_TIMEOUT: Final = 30.0
#: What git says outside a repository (and what the git API answers then).
NOT_A_REPOSITORY: Final = "fatal: not a git repository (or any of the parent directories): .git\n"
#: Given to every git command: quoted paths off for parsing, and nothing
#: that could run a program chosen by what a client wrote.
SAFE_CONFIG: Final = (
    "-c",
    "core.quotepath=off",
    "-c",
    "safe.bareRepository=explicit",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "protocol.ext.allow=never",
)
NETWORK_TIMEOUT: Final = 300.0

_REF_CHARACTERS: Final = re.compile(r"[\s~^:?*\[\]\\;&|`$()'\"<>]|\.\.")
_REPOSITORY_ENVIRONMENT: Final = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)

log = Logger()


@dataclass(frozen=True)
class GitResult:
    code: int
    stdout: str
    stderr: str


class GitError(ProcedureError):
    """
    Git said no; C{message} is its own text, as the original passed it on.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "git_failed")


def git_environment() -> dict[str, str]:
    """
    The environment of every git child: never prompt, never start an
    editor, speak untranslated messages, and use the repository of the
    working directory, not one inherited from a caller's C{GIT_DIR}.
    """
    env = dict(os.environ)
    for name in _REPOSITORY_ENVIRONMENT:
        env.pop(name, None)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_EDITOR": ":",
            "GIT_OPTIONAL_LOCKS": "0",
            "LC_ALL": "C",
        }
    )
    return env


def hooks_path(hooks: str, git_dir: str, workspace: str) -> str:
    """
    The hooks directory git may use: the repository's own when it lies in
    the git directory (which no client can write: the files API refuses
    C{.git}), none at all when it lies in the workspace (a
    C{core.hooksPath} such as C{.githooks} or C{.husky}, where a client
    could write a hook and then commit).
    """
    real = os.path.realpath(hooks)
    inside_git = os.path.commonpath([real, os.path.realpath(git_dir)]) == os.path.realpath(git_dir)
    in_workspace = os.path.commonpath([real, os.path.realpath(workspace)]) == os.path.realpath(
        workspace
    )
    if in_workspace and not inside_git:
        log.warn(
            "Git hooks in {hooks} are not run: clients can write there (core.hooksPath "
            "inside the workspace)",
            hooks=hooks,
        )
        return os.devnull
    return real


class GitRunner:
    """
    Runs C{git <args>} in C{cwd}. The only place a git process is started.

    The repository is found once (with C{safe.bareRepository=explicit}, so a
    directory that merely looks like a bare repository never counts) and
    then pinned with C{GIT_DIR} and C{GIT_WORK_TREE}: nothing written into
    the workspace later changes which repository, and so which
    configuration, git uses. Every invocation also turns off what would run
    programs from places clients can write: C{core.fsmonitor}, hooks in a
    hooks directory inside the workspace (see L{hooks_path}), and the
    C{ext::} transport. While no repository is found every command answers
    git's own "not a git repository" without running.

    @param clock: schedules the deadline (a L{task.Clock} in tests).
    @param git: the executable; C{git} on C{PATH} by default.
    """

    def __init__(
        self,
        cwd: str,
        reactor: IReactorProcess | None = None,
        clock: IReactorTime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        git: str | None = None,
    ) -> None:
        self.cwd = cwd
        self._reactor: Any = reactor if reactor is not None else default_reactor()
        self._clock: Any = clock if clock is not None else self._reactor
        self.timeout = timeout
        self.git = git or next(iter(which("git")), None)
        #: The pinned repository's environment and hooks path, once found.
        self.repository: dict[str, str] | None = None
        self.hooks_path = os.devnull

    async def run(self, *args: str, timeout: float | None = None) -> GitResult:
        """
        Run git in the pinned repository and collect its output; a non-zero
        exit is a result, not an error. Fails with L{ProcedureError} when
        git is missing or the deadline passes (the process is killed and
        reaped first).
        """
        if self.git is None:
            raise ProcedureError("git is not installed (no git executable on PATH)", "no_git")
        repository = await self._pinned()
        if repository is None:
            return GitResult(128, "", NOT_A_REPOSITORY)
        argv = ["-c", f"core.hooksPath={self.hooks_path}", *args]
        return await self._spawn(argv, {**git_environment(), **repository}, timeout, args)

    async def _pinned(self) -> dict[str, str] | None:
        """
        The repository's environment: found with the first command, then
        kept. Not found is not kept, so a C{git init} later is seen.
        """
        if self.repository is not None:
            return self.repository
        discover = ("rev-parse", "--absolute-git-dir", "--show-toplevel", "--git-path", "hooks")
        found = await self._spawn(list(discover), git_environment(), None, discover)
        lines = found.stdout.splitlines()
        if found.code != 0 or len(lines) != 3:
            return None
        git_dir, top, hooks = lines
        self.repository = {"GIT_DIR": git_dir, "GIT_WORK_TREE": top}
        self.hooks_path = hooks_path(os.path.join(top, hooks), git_dir, self.cwd)
        return self.repository

    async def _spawn(
        self,
        args: list[str],
        env: dict[str, str],
        timeout: float | None,
        label: tuple[str, ...],
    ) -> GitResult:
        assert self.git is not None
        limit = self.timeout if timeout is None else timeout
        child = spawn(self._reactor, [self.git, *SAFE_CONFIG, *args], self.cwd, env=env)
        deadline = self._clock.callLater(limit, child.kill)
        try:
            result = await child.ended
        finally:
            if deadline.active():
                deadline.cancel()
        if result.overflowed:
            raise ProcedureError(f"git {label[0]} printed more than the server reads", "too_large")
        if result.killed:
            log.warn("git {args} killed after {limit}s", args=" ".join(label[:2]), limit=limit)
            raise ProcedureError(f"git {label[0]} timed out after {limit:g} s", "timeout")
        return GitResult(
            result.code,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    async def check(self, *args: str, timeout: float | None = None) -> str:
        """
        Run git and return its stdout, or fail with L{GitError} carrying
        git's stderr verbatim (its stdout when stderr is empty, as for
        "nothing to commit").
        """
        result = await self.run(*args, timeout=timeout)
        if result.code != 0:
            raise GitError(result.stderr or result.stdout or "Git command failed")
        return result.stdout


def _text(value: Any, missing: str, name: str) -> str:
    if value is None or value == "":
        raise ProcedureError(missing)
    if not isinstance(value, str):
        raise ProcedureError(f"{name} must be a string")
    try:
        check_text(value.replace("\n", " ").replace("\t", " "), name.lower())
    except PathRefused as e:
        raise ProcedureError(e.message) from None
    return value


class GitOperations:
    """
    The C{git} operations of one workspace. Mutations run one at a time
    (git's index lock would refuse a second) and each publishes a C{git}
    event naming the branch or the short commit id.
    """

    def __init__(
        self,
        runner: GitRunner,
        workspace: Workspace,
        broadcaster: Broadcaster | None = None,
        changes: FileChangeLedger | None = None,
    ) -> None:
        self.runner = runner
        self.workspace = workspace
        self._broadcaster = broadcaster
        self._changes = changes
        self._lock = DeferredLock()

    def _event(self, type: GitEventType, message: str) -> None:
        if self._broadcaster is not None:
            git_event(self._broadcaster, type, message)

    # reading

    async def get_current_branch(self) -> dict[str, str]:
        return {"branch": await self._branch()}

    async def _branch(self) -> str:
        """
        The checked-out branch (also on a branch without commits yet), or
        C{HEAD} when detached.
        """
        result = await self.runner.run("symbolic-ref", "--short", "-q", "HEAD")
        if result.code == 0:
            return result.stdout.strip()
        if result.code == 1:
            return "HEAD"
        raise GitError(result.stderr or "Git command failed")

    async def get_branches(self) -> dict[str, list[str]]:
        out = await self.runner.check(
            "for-each-ref", "--format=%(refname)%00%(symref)", "refs/heads", "refs/remotes"
        )
        branches = []
        for line in out.splitlines():
            ref, _, symref = line.partition("\0")
            if symref:
                continue
            if ref.startswith("refs/heads/"):
                branches.append(ref[len("refs/heads/") :])
            elif ref.startswith("refs/remotes/"):
                branches.append(ref[len("refs/") :])
        return {"branches": branches}

    async def get_status(self) -> dict[str, Any]:
        out = await self.runner.check("status", "--porcelain=v1", "-z")
        files = []
        fields = out.split("\0")
        i = 0
        while i < len(fields):
            entry = fields[i]
            i += 1
            if len(entry) < 4:
                continue
            status, path = entry[:2], entry[3:]
            if status[0] in "RC" or status[1] in "RC":
                path = f"{fields[i]} -> {path}"
                i += 1
            files.append({"status": status.strip(), "file": path})
        return {"files": files, "hasChanges": bool(files)}

    # changing

    async def checkout(self, branch: Any = None) -> dict[str, str]:
        name = await self._ref(branch, "Branch name is required")
        async with self._lock:
            await self.runner.check("checkout", name, "--")
        self._event("branch", f"Switched to branch {name}")
        return {"message": f"Switched to branch: {name}"}

    async def create_branch(self, name: Any = None) -> dict[str, str]:
        ref = await self._ref(name, "Branch name is required")
        async with self._lock:
            await self.runner.check("checkout", "-b", ref, "--")
        self._event("branch", f"Created and switched to branch {ref}")
        return {"message": f"Created and switched to branch: {ref}"}

    async def checkout_file(self, file: Any = None) -> dict[str, str]:
        given = _text(file, "File path is required", "File path")
        if given.startswith("-"):
            raise ProcedureError("File path cannot start with dash")
        try:
            target = self.workspace.resolve(given, follow=False)
        except PathRefused as e:
            raise ProcedureError(e.message) from None
        async with self._lock:
            await self.runner.check("checkout", "HEAD", "--", f":(literal){target.path}")
        if self._changes is not None:
            self._changes.changed(target.relative, "change")
        self._event("status", f"Restored {target.relative} from HEAD")
        return {"message": f"Restored file: {given}"}

    async def commit(self, message: Any = None) -> dict[str, str]:
        text = _text(message, "Commit message is required", "Commit message")
        async with self._lock:
            await self.runner.check("add", "-A")
            await self.runner.check("commit", f"--message={text}")
            short = (await self.runner.check("rev-parse", "--short", "HEAD")).strip()
            branch = await self._branch()
        subject = text.splitlines()[0] if text.strip() else text
        self._event("commit", f"Committed {short} on {branch}: {subject}")
        return {"message": f"Commit created: {text}"}

    async def push(self) -> dict[str, str]:
        async with self._lock:
            await self.runner.check("push", timeout=NETWORK_TIMEOUT)
            branch = await self._branch()
        self._event("push", f"Pushed {branch}")
        return {"message": "Pushed to remote repository"}

    async def pull(self) -> dict[str, str]:
        async with self._lock:
            await self.runner.check("pull", "--no-edit", timeout=NETWORK_TIMEOUT)
            branch = await self._branch()
            short = (await self.runner.check("rev-parse", "--short", "HEAD")).strip()
        self._event("pull", f"Pulled into {branch}, now at {short}")
        return {"message": "Pulled from remote repository"}

    async def stash(self, message: Any = None) -> dict[str, str]:
        args = ["stash", "push"]
        if message is not None and message != "":
            args.append("--message=" + _text(message, "", "Stash message"))
        async with self._lock:
            out = await self.runner.check(*args)
            branch = await self._branch()
        if "No local changes to save" in out:
            return {"message": "No local changes to save"}
        self._event("status", f"Stashed changes on {branch}")
        return {"message": "Changes stashed"}

    async def stash_with_message(self, message: Any = None) -> dict[str, str]:
        return await self.stash(_text(message, "Stash message is required", "Stash message"))

    async def stash_pop(self) -> dict[str, str]:
        async with self._lock:
            await self.runner.check("stash", "pop")
            branch = await self._branch()
        self._event("status", f"Restored stashed changes on {branch}")
        return {"message": "Stashed changes restored"}

    async def _ref(self, value: Any, missing: str) -> str:
        """
        The original's ref checks with its texts, then git's own rules for a
        branch name.
        """
        if value is None or value == "":
            raise ProcedureError(missing)
        if not isinstance(value, str):
            raise ProcedureError("Invalid ref name")
        if value.startswith("-"):
            raise ProcedureError("Ref name cannot start with dash")
        if _REF_CHARACTERS.search(value) or re.search(r"[\x00-\x1f\x7f\ud800-\udfff]", value):
            raise ProcedureError("Invalid characters in ref name")
        result = await self.runner.run("check-ref-format", "--branch", value)
        if result.code != 0:
            raise ProcedureError(
                result.stderr.strip() or f"Invalid ref name: {shown(value)}", "invalid_ref"
            )
        return value
