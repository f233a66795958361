"""
The diagnostics source: one language server per configured language,
started when a matching file is first touched, kept in step with file
changes, restarted with backoff when it crashes, stopped with the service.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

from lsprotocol import types
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cluso_router._time import iso_timestamp
from cluso_router.router.procedures import ProcedureError
from cluso_router.sources.context import SourceContext
from cluso_router.sources.lifecycle import SourceService
from cluso_router.sources.lsp.channel import DIAGNOSTICS, LSP, diagnostics_updated
from cluso_router.sources.lsp.client import LanguageClient, converter, path_uri
from cluso_router.sources.lsp.config import LanguageServerConfig, language_id
from cluso_router.sources.lsp.diagnostics import DiagnosticsStore, convert, uri_to_relative
from cluso_router.sources.lsp.process import ServerProcess, spawn_server
from cluso_router.sources.lsp.routes import diagnostics_operations
from cluso_router.workspace.paths import PathRefused, Workspace

#: Channel of server lifecycle events (started, restarting, failed).
MAX_RESTARTS: Final = 5
BACKOFF: Final = (0.5, 1.0, 2.0, 4.0, 8.0)
#: A server that ran this long before crashing gets its full restart budget back.
STABLE_AFTER: Final = 60.0
MAX_OPEN_DOCUMENTS: Final = 200
MAX_FILE_SIZE: Final = 2 * 1024 * 1024
STOP_GRACE: Final = 3.0


class ManagedServer:
    """
    One configured language server through its whole life: idle, starting,
    running, restarting, failed or stopped.
    """

    log = Logger()

    def __init__(self, config: LanguageServerConfig, manager: LanguageServerManager) -> None:
        self.config = config
        self.name = config.language
        self.state = "idle"
        self.restarts = 0
        self.last_error: str | None = None
        self._manager = manager
        self._documents: OrderedDict[str, None] = OrderedDict()
        self._process: ServerProcess | None = None
        self._client: LanguageClient | None = None
        self._started_at = 0.0
        self._timer: IDelayedCall | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def status(self) -> dict[str, Any]:
        return {
            "language": self.name,
            "command": list(self.config.command),
            "extensions": list(self.config.extensions),
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "openDocuments": len(self._documents),
            "error": self.last_error,
        }

    def touched(self, path: str, event: str) -> None:
        if event in ("unlink", "unlinkDir"):
            prefix = path + "/"
            for gone in [p for p in self._documents if p == path or p.startswith(prefix)]:
                self._close(gone)
            files = self._manager.store.files()
            self._manager.forget(self.name, [f for f in files if f == path or f.startswith(prefix)])
            return
        if event not in ("add", "change") or not self.config.serves(path):
            return
        self._documents[path] = None
        self._documents.move_to_end(path)
        while len(self._documents) > self._manager.max_open_documents:
            self._close(next(iter(self._documents)))
        if self.state == "idle":
            self.start()
        elif self.state == "running":
            self._sync(path)

    def start(self) -> None:
        self._timer = None
        executable = shutil.which(self.config.command[0])
        if executable is None:
            self._give_up(f"command not found: {self.config.command[0]}")
            return
        self.state = "starting"
        process = ServerProcess(
            f"{self.name} language server",
            self._manager.clock,
            self._notification,
            {
                "workspace/configuration": lambda params: [
                    None for _ in (params or {}).get("items", [])
                ],
                "workspace/workspaceFolders": lambda _: [
                    {"uri": path_uri(self._manager.root), "name": self._manager.root}
                ],
                "window/workDoneProgress/create": lambda _: None,
                "client/registerCapability": lambda _: None,
                "client/unregisterCapability": lambda _: None,
                "window/showMessageRequest": lambda _: None,
            },
        )
        self._process = process
        try:
            spawn_server(
                self._manager.reactor,
                process,
                [executable, *self.config.command[1:]],
                self._manager.root,
            )
        except OSError as e:
            self._process = None
            self._give_up(f"cannot start {self.config.command[0]}: {e}")
            return
        process.when_ended().addCallback(self._ended, process)
        ensureDeferred(self._initialize(process))

    async def _initialize(self, process: ServerProcess) -> None:
        client = LanguageClient(process, self._manager.root)
        try:
            await client.initialize(self._manager.initialize_timeout)
        except Exception as e:
            if self.state == "stopped":
                return
            self.log.error("{name} did not initialize: {error}", name=process.name, error=e)
            self.last_error = f"initialize failed: {e}"
            process.kill()
            return
        if process is not self._process:
            return
        self._client = client
        self.state = "running"
        self._started_at = self._manager.clock.seconds()
        self.log.info(
            "{name} started (pid {pid}, command {command})",
            name=process.name,
            pid=process.pid,
            command=" ".join(self.config.command),
        )
        self._manager.lifecycle("started", self, pid=process.pid)
        # A new process reports every open document afresh; announce all of it.
        self._manager.store.forget(self.name)
        for path in list(self._documents):
            self._sync(path)

    def _ended(self, reason: str, process: ServerProcess) -> None:
        if process is not self._process:
            return
        self._process = self._client = None
        if self.state == "stopped":
            return
        self.last_error = reason
        self.log.warn("{name} {reason}", name=process.name, reason=reason)
        if self._started_at and self._manager.clock.seconds() - self._started_at >= STABLE_AFTER:
            self.restarts = 0
        if self.restarts >= self._manager.max_restarts:
            self._give_up(f"{reason}; gave up after {self.restarts} restarts")
            return
        delay = self._manager.backoff[min(self.restarts, len(self._manager.backoff) - 1)]
        self.restarts += 1
        self.state = "restarting"
        self._manager.lifecycle("restarting", self, delay=delay, reason=reason)
        self._timer = self._manager.clock.callLater(delay, self.start)

    def _give_up(self, reason: str) -> None:
        self.state = "failed"
        self.last_error = reason
        self.log.error("{name} language server failed: {reason}", name=self.name, reason=reason)
        self._manager.lifecycle("failed", self, reason=reason)
        self._manager.forget(self.name, None)

    async def stop(self) -> None:
        self.state = "stopped"
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        process, client = self._process, self._client
        if process is None:
            return
        ended = process.when_ended()
        if client is not None:
            try:
                await client.shutdown()
            except Exception as e:
                self.log.info(
                    "{name} did not shut down cleanly: {error}", name=process.name, error=e
                )
        if process.running:
            process.kill("TERM")
        killer = self._manager.clock.callLater(STOP_GRACE, process.kill)
        await ended
        if killer.active():
            killer.cancel()

    def _notification(self, method: str, params: Any) -> None:
        if method == "textDocument/publishDiagnostics":
            self._manager.published(self.name, params)
        elif method == "window/showMessage" and isinstance(params, dict):
            self.log.info("{name}: {message}", name=self.name, message=params.get("message"))

    def _sync(self, path: str) -> None:
        client = self._client
        if client is None:
            return
        uri = path_uri(os.path.join(self._manager.root, path))
        text = self._manager.read_text(path)
        if text is None:
            self._close(path)
            return
        if client.is_open(uri):
            client.did_change(uri, text)
            client.did_save(uri, text)
        else:
            client.did_open(uri, language_id(path), text)

    def _close(self, path: str) -> None:
        self._documents.pop(path, None)
        if self._client is not None:
            self._client.did_close(path_uri(os.path.join(self._manager.root, path)))


class LanguageServerManager(SourceService):
    """
    The C{diagnostics} source; also answers C{lsp.getDiagnostics} and
    C{lsp.touchFile}, and C{GET /api/diagnostics} when it runs in a server.
    """

    log = Logger()

    def __init__(
        self,
        context: SourceContext,
        configs: Sequence[LanguageServerConfig],
        clock: IReactorTime | None = None,
        max_restarts: int = MAX_RESTARTS,
        backoff: Sequence[float] = BACKOFF,
        initialize_timeout: float = 30.0,
        max_open_documents: int = MAX_OPEN_DOCUMENTS,
    ) -> None:
        super().__init__(context)
        self.workspace = Workspace(context.root)
        self.root = self.workspace.root
        self.broadcaster = context.broadcaster
        self.file_changes = context.file_changes
        self.reactor = context.reactor
        self.clock: IReactorTime = clock if clock is not None else context.reactor
        self.max_restarts = max_restarts
        self.backoff = tuple(backoff) or BACKOFF
        self.initialize_timeout = initialize_timeout
        self.max_open_documents = max_open_documents
        self.servers = [ManagedServer(config, self) for config in configs]
        self.store = DiagnosticsStore()

    def startSource(self) -> None:
        self.context.claim_channel(DIAGNOSTICS)
        self.context.claim_channel(LSP)
        self.context.add_operations(diagnostics_operations(self))
        self.file_changes.add_observer(self.file_changed)

    def stopSource(self) -> Deferred[Any]:
        self.file_changes.remove_observer(self.file_changed)
        return DeferredList([ensureDeferred(server.stop()) for server in self.servers])

    def file_changed(self, path: str, event: str) -> None:
        for server in self.servers:
            server.touched(path, event)

    def touch(self, path: str) -> list[str]:
        """
        Open (or refresh) C{path} in every server for its kind of file,
        starting them if needed; return the languages that serve it.
        """
        serving = [s for s in self.servers if s.config.serves(path)]
        for server in serving:
            server.touched(path, "change")
        return [s.name for s in serving]

    def snapshot(self, file: str | None = None) -> dict[str, Any]:
        return {
            "diagnostics": self.store.snapshot(file),
            "servers": [server.status() for server in self.servers],
        }

    def published(self, server: str, params: Any) -> None:
        try:
            report = converter.structure(params, types.PublishDiagnosticsParams)
        except Exception as e:
            self.log.warn(
                "{server}: ignoring malformed diagnostics: {error}", server=server, error=e
            )
            return
        file = uri_to_relative(report.uri, self.root)
        if file is None:
            return
        entries = [convert(file, d, server) for d in report.diagnostics]
        if self.store.update(server, file, entries):
            self._announce(file)

    def forget(self, server: str, files: list[str] | None) -> None:
        """
        Drop C{server}'s diagnostics (for C{files}, or all) and tell
        subscribers those files are clear of them.
        """
        for file in self.store.forget(server, files):
            self._announce(file)

    def lifecycle(self, kind: str, server: ManagedServer, **fields: Any) -> None:
        self.broadcaster.emit(
            LSP.channel,
            {
                "type": kind,
                "language": server.name,
                "command": list(server.config.command),
                "restarts": server.restarts,
                **fields,
                "timestamp": iso_timestamp(),
            },
        )

    def read_text(self, path: str) -> str | None:
        """
        The text of root-relative C{path}, or C{None} when it is gone, too
        big, or not a file the workspace rules let anyone read (outside the
        root, or a blocked name such as C{.git/...} or C{.env}): what a
        language server is given may come back in its diagnostics.
        """
        try:
            full = self.workspace.resolve(path).path
        except PathRefused:
            return None
        try:
            with open(full, "rb") as f:
                data = f.read(MAX_FILE_SIZE + 1)
        except OSError:
            return None
        if len(data) > MAX_FILE_SIZE:
            return None
        return data.decode("utf-8", "replace")

    def _announce(self, file: str) -> None:
        entries = self.store.for_file(file)
        diagnostics_updated(self.broadcaster, entries, cleared=not entries, file=file)

    def diagnostics(self, file: str | None = None) -> dict[str, Any]:
        """
        The current diagnostics (of C{file}, or all) and each server's state.
        """
        return self.snapshot(self.relative(file) if file else None)

    def touch_file(self, file: Any = None) -> dict[str, Any]:
        """
        Open C{file} in the servers for its kind, starting them if needed.
        """
        relative = self.relative(file)
        if self.read_text(relative) is None:
            raise ProcedureError(f"Cannot read file: {file}", "not_found")
        return {"file": relative, "languages": self.touch(relative)}

    def relative(self, file: Any) -> str:
        """
        C{file} (relative to the root, or absolute inside it) as a
        root-relative C{/}-separated path, under the files API's rules.

        @raise ProcedureError: when it is missing, not a string, or refused
            (outside the root, a blocked name, NUL or not Unicode).
        """
        if file is None or file == "":
            raise ProcedureError("Missing required field: file", "validation_error")
        try:
            return self.workspace.resolve(file).relative
        except PathRefused as e:
            raise ProcedureError(e.message, "path_refused") from None
