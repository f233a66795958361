"""
A language server child process: JSON-RPC on its stdin and stdout, its
stderr logged and its last line kept for error messages. The process itself
is the project's one child-process runner (L{cluso_router._process}).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cluso_router._process import ChildProcess, ProcessResult, spawn
from cluso_router.sources.lsp.framing import FramingError
from cluso_router.sources.lsp.jsonrpc import JsonRpcConnection, NotificationHandler, RequestHandler


class ServerProcess(ChildProcess):
    """
    One running server; L{when_ended} tells how it ended.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        on_notification: NotificationHandler,
        request_handlers: Mapping[str, RequestHandler],
    ) -> None:
        super().__init__(on_output=self._received, on_error=self._logged, keep_stdin=True)
        self.name = name
        self.rpc = JsonRpcConnection(self.write, clock, on_notification, request_handlers)
        self.end_reason: str | None = None
        self.ended.addCallback(self._describe)

    def _received(self, data: bytes) -> None:
        try:
            self.rpc.data_received(data)
        except FramingError as e:
            self.log.error("{name} broke the protocol: {error}", name=self.name, error=e)
            self.kill()

    def _logged(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.log.debug("{name}: {line}", name=self.name, line=line)

    def _describe(self, result: ProcessResult) -> ProcessResult:
        self.rpc.close()
        if result.signal is not None:
            how = f"killed by signal {result.signal}"
        else:
            how = f"exited with code {result.exit_code}"
        lines = result.error_text.splitlines()
        self.end_reason = f"{how}: {lines[-1]}" if lines else how
        return result

    def when_ended(self) -> Deferred[str]:
        """
        Fires with a description of how the process ended, once it has.
        """
        described: Deferred[str] = Deferred()

        def tell(result: ProcessResult) -> ProcessResult:
            assert self.end_reason is not None
            described.callback(self.end_reason)
            return result

        self.ended.addCallback(tell)
        return described


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
    spawn(reactor, command, cwd, env=environ if environ is not None else os.environ, child=protocol)
