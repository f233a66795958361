"""
A language server child process: JSON-RPC on its stdin and stdout, its
stderr kept (the tail) for error messages and logged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.sources.lsp.framing import FramingError
from cluso_router.sources.lsp.jsonrpc import JsonRpcConnection, NotificationHandler, RequestHandler

STDERR_TAIL: Final = 4096


class ServerProcess(ProcessProtocol):
    """
    The protocol of one running server; L{when_ended} tells how it ended.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        on_notification: NotificationHandler,
        request_handlers: Mapping[str, RequestHandler],
    ) -> None:
        self.name = name
        self.rpc = JsonRpcConnection(self._write, clock, on_notification, request_handlers)
        self.end_reason: str | None = None
        self._waiters: list[Deferred[str]] = []
        self.pid: int | None = None
        self._stderr = bytearray()
        self._running = False

    def connectionMade(self) -> None:
        self._running = True
        assert self.transport is not None
        self.pid = getattr(self.transport, "pid", None)

    def outReceived(self, data: bytes) -> None:
        try:
            self.rpc.data_received(data)
        except FramingError as e:
            self.log.error("{name} broke the protocol: {error}", name=self.name, error=e)
            self.kill()

    def errReceived(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-STDERR_TAIL]
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.log.debug("{name}: {line}", name=self.name, line=line)

    def processEnded(self, reason: Failure) -> None:
        self._running = False
        self.rpc.close()
        value = reason.value
        code, sig = getattr(value, "exitCode", None), getattr(value, "signal", None)
        how = f"killed by signal {sig}" if sig is not None else f"exited with code {code}"
        tail = self.stderr_tail()
        self.end_reason = f"{how}: {tail}" if tail else how
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.end_reason)

    def when_ended(self) -> Deferred[str]:
        """
        Fires with a description of how the process ended, once it has.
        """
        if self.end_reason is not None:
            return succeed(self.end_reason)
        d: Deferred[str] = Deferred()
        self._waiters.append(d)
        return d

    @property
    def running(self) -> bool:
        return self._running

    def stderr_tail(self) -> str:
        lines = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def kill(self, sig: str = "KILL") -> None:
        if self.transport is None or not self._running:
            return
        with contextlib.suppress(ProcessExitedAlready):
            self.transport.signalProcess(sig)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and self._running:
            self.transport.write(data)


def spawn_server(
    reactor: Any,
    protocol: ServerProcess,
    command: Sequence[str],
    cwd: str,
    environ: Mapping[str, str] | None = None,
) -> None:
    """
    Start C{command} (an argument list; C{command[0]} already resolved to
    an executable) with C{protocol} on its pipes.
    """
    reactor.spawnProcess(
        protocol,
        command[0],
        list(command),
        env=dict(environ if environ is not None else os.environ),
        path=cwd,
        childFDs={0: "w", 1: "r", 2: "r"},
    )
