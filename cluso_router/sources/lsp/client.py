"""
The client half of LSP over one server process: the initialize handshake,
document synchronisation, and an orderly shutdown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from lsprotocol import types
from lsprotocol.converters import get_converter

from cluso_router._version import __version__
from cluso_router.sources.lsp.process import ServerProcess

INITIALIZE_TIMEOUT: Final = 30.0
SHUTDOWN_TIMEOUT: Final = 3.0

converter = get_converter()


def path_uri(path: str) -> str:
    return Path(path).as_uri()


def client_capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(did_save=True),
            publish_diagnostics=types.PublishDiagnosticsClientCapabilities(
                related_information=False, version_support=True
            ),
        ),
        workspace=types.WorkspaceClientCapabilities(workspace_folders=True, configuration=True),
    )


class LanguageClient:
    """
    Talks LSP to one running server. Documents are always sent whole, which
    both full and incremental servers accept.
    """

    def __init__(self, process: ServerProcess, root: str) -> None:
        self.process = process
        self.root = root
        self.capabilities: dict[str, Any] = {}
        self._versions: dict[str, int] = {}

    async def initialize(self, timeout: float = INITIALIZE_TIMEOUT) -> None:
        root_uri = path_uri(self.root)
        params = types.InitializeParams(
            process_id=os.getpid(),
            root_uri=root_uri,
            root_path=self.root,
            capabilities=client_capabilities(),
            workspace_folders=[
                types.WorkspaceFolder(uri=root_uri, name=os.path.basename(self.root))
            ],
            client_info=types.ClientInfo(name="cluso-router", version=__version__),
        )
        result = await self.process.rpc.request(
            "initialize", converter.unstructure(params), timeout
        )
        capabilities = result.get("capabilities") if isinstance(result, dict) else None
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}
        self.process.rpc.notify("initialized", {})

    def is_open(self, uri: str) -> bool:
        return uri in self._versions

    def did_open(self, uri: str, language_id: str, text: str) -> None:
        self._versions[uri] = 1
        params = types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=language_id, version=1, text=text
            )
        )
        self.process.rpc.notify("textDocument/didOpen", converter.unstructure(params))

    def did_change(self, uri: str, text: str) -> None:
        version = self._versions[uri] + 1
        self._versions[uri] = version
        params = types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
        self.process.rpc.notify("textDocument/didChange", converter.unstructure(params))

    def did_save(self, uri: str, text: str) -> None:
        save = self._save_options()
        if save is None:
            return
        params = types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            text=text if save.get("includeText") else None,
        )
        self.process.rpc.notify("textDocument/didSave", converter.unstructure(params))

    def did_close(self, uri: str) -> None:
        if self._versions.pop(uri, None) is None:
            return
        params = types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)
        )
        self.process.rpc.notify("textDocument/didClose", converter.unstructure(params))

    async def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """
        Ask the server to shut down and exit; the caller still waits for
        the process to end (and kills it if it does not).
        """
        try:
            await self.process.rpc.request("shutdown", None, timeout)
        finally:
            self.process.rpc.notify("exit", None)

    def _save_options(self) -> dict[str, Any] | None:
        sync = self.capabilities.get("textDocumentSync")
        if not isinstance(sync, dict):
            return None
        save = sync.get("save")
        if save is True:
            return {}
        return save if isinstance(save, dict) else None
