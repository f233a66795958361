"""
Child processes run from the reactor: argument lists, never a shell; output
streamed to a callback or collected within a budget; a kill that is safe at
any time and does not wait for grandchildren holding the pipes.

The one runner of the project: searches (ripgrep), validators, git and
language servers all start their children here.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: How much of a child's stderr is kept: enough for any error message.
STDERR_LIMIT: Final = 64 * 1024
#: How much stdout a child whose output is collected may write; past it the
#: child is killed and its result says so.
STDOUT_LIMIT: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class ProcessResult:
    """
    How a child ended: its exit code, or the signal that killed it, and its
    output (stdout is empty when it was streamed to a callback).
    """

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    #: Whether L{ChildProcess.kill} ended it (a deadline, a cancel).
    killed: bool = False
    #: Whether it wrote more than the stdout budget (and was killed for it).
    overflowed: bool = False

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()

    @property
    def code(self) -> int:
        """
        The exit code, or for a signal death the signal negated (as a shell
        reports it).
        """
        return self.exit_code if self.exit_code is not None else -(self.signal or 1)


class ChildProcess(ProcessProtocol):
    """
    One running child; L{ended} fires with its L{ProcessResult} once it has
    exited and its pipes are closed.
    """

    def __init__(
        self,
        on_output: Callable[[bytes], None] | None = None,
        on_error: Callable[[bytes], None] | None = None,
        keep_stdin: bool = False,
        max_output: int = STDOUT_LIMIT,
    ) -> None:
        """
        @param on_output: receives stdout as it comes; without it stdout is
            collected, up to C{max_output} bytes.
        @param on_error: also receives stderr as it comes.
        @param keep_stdin: leave stdin open for L{write} (else it is closed
            at once, so a child never waits for input).
        """
        self.ended: Deferred[ProcessResult] = Deferred()
        self._on_output = on_output
        self._on_error = on_error
        self._keep_stdin = keep_stdin
        self._max_output = max_output
        self._stdout: list[bytes] = []
        self._stdout_size = 0
        self._stderr = bytearray()
        self._running = False
        self._killed = False
        self._overflowed = False
        self.pid: int | None = None

    @property
    def running(self) -> bool:
        return self._running

    def connectionMade(self) -> None:
        self._running = True
        assert self.transport is not None
        self.pid = getattr(self.transport, "pid", None)
        if not self._keep_stdin:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if self._on_output is not None:
            self._on_output(data)
            return
        self._stdout_size += len(data)
        if self._stdout_size > self._max_output:
            self._overflowed = True
            self.kill()
            return
        self._stdout.append(data)

    def errReceived(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-STDERR_LIMIT]
        if self._on_error is not None:
            self._on_error(data)

    def write(self, data: bytes) -> None:
        """
        Write to the child's stdin (kept open with C{keep_stdin}) while it runs.
        """
        if self.transport is not None and self._running:
            self.transport.write(data)

    def processExited(self, reason: Failure) -> None:
        if self._killed and self.transport is not None:
            # A grandchild (ssh, a hook) may still hold the pipes open; the
            # answer must not wait for it.
            self.transport.loseConnection()

    def processEnded(self, reason: Failure) -> None:
        self._running = False
        value = reason.value
        self.ended.callback(
            ProcessResult(
                exit_code=getattr(value, "exitCode", None),
                signal=getattr(value, "signal", None),
                stdout=b"".join(self._stdout),
                stderr=bytes(self._stderr),
                killed=self._killed,
                overflowed=self._overflowed,
            )
        )

    def kill(self, signal: str = "KILL") -> None:
        """
        Signal the child (default: kill it) if it is still running;
        harmless otherwise.
        """
        if not self._running or self.transport is None:
            return
        self._killed = True
        with suppress(ProcessExitedAlready):
            self.transport.signalProcess(signal)


class ExecutableNotFound(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not installed (not found on PATH)")
        self.name = name


def python_scripts_dirs() -> list[str]:
    """
    Where tools installed with this Python live, whether or not its
    environment is activated: the environment's scripts directory (and
    that of a C{pip install --user}), and the interpreter's own.
    """
    dirs = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        dirs.append(sysconfig.get_path("scripts", user_scheme))
    return list(dict.fromkeys(d for d in dirs if d))


def find_executable(name: str, extra_dirs: Sequence[str] = ()) -> str:
    """
    The path of C{name}: itself when it contains a slash, else the first
    match in C{extra_dirs} and then on C{PATH}.

    @raise ExecutableNotFound: when there is none.
    """
    if os.sep in name:
        if os.access(name, os.X_OK):
            return name
        raise ExecutableNotFound(name)
    search = os.pathsep.join([*extra_dirs, os.environ.get("PATH", os.defpath)])
    found = shutil.which(name, path=search)
    if found is None:
        raise ExecutableNotFound(name)
    return found


def spawn(
    reactor: Any,
    argv: Sequence[str | bytes],
    cwd: str,
    on_output: Callable[[bytes], None] | None = None,
    env: Mapping[str, str] | None = None,
    child: ChildProcess | None = None,
) -> ChildProcess:
    """
    Start C{argv} (its first item an executable path) in C{cwd}, with this
    process's environment unless C{env} is given, with C{child} (default a
    new L{ChildProcess} streaming to C{on_output}) on its pipes.
    """
    if child is None:
        child = ChildProcess(on_output)
    reactor.spawnProcess(
        child,
        argv[0],
        list(argv),
        env=dict(os.environ if env is None else env),
        path=cwd,
    )
    return child


class LineSplitter:
    """
    Cuts a byte stream into records ending with C{separator}; whatever is
    left unterminated at the end is the last record.
    """

    def __init__(self, on_record: Callable[[bytes], None], separator: bytes = b"\n") -> None:
        self._on_record = on_record
        self._separator = separator
        self._pending: list[bytes] = []

    def feed(self, data: bytes) -> None:
        first, *rest = data.split(self._separator)
        self._pending.append(first)
        if not rest:
            return
        self._on_record(b"".join(self._pending))
        *records, last = rest
        for record in records:
            self._on_record(record)
        self._pending = [last]

    def close(self) -> None:
        rest = b"".join(self._pending)
        self._pending = []
        if rest:
            self._on_record(rest)
