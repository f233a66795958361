"""
JSON-RPC 2.0 over LSP framing: requests with ids and timeouts, responses,
notifications, and answers to the requests a server sends its client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cluso_router._json import JSONError, loads
from cluso_router.sources.lsp.framing import MessageDecoder, encode_message

DEFAULT_TIMEOUT: Final = 30.0
METHOD_NOT_FOUND: Final = -32601

NotificationHandler = Callable[[str, Any], None]
RequestHandler = Callable[[Any], Any]


class RpcError(Exception):
    """
    The server answered a request with an error, or never answered it.
    """

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.code = code


class ConnectionClosed(RpcError):
    def __init__(self, method: str) -> None:
        super().__init__(method, "connection to the language server closed")


class JsonRpcConnection:
    """
    One peer's side of a JSON-RPC conversation.

    @param send: writes bytes to the peer.
    @param on_notification: called with C{(method, params)} for each
        notification the peer sends.
    @param request_handlers: answers to requests the peer sends, by method;
        any other request gets C{MethodNotFound}.
    """

    log = Logger()

    def __init__(
        self,
        send: Callable[[bytes], None],
        clock: IReactorTime,
        on_notification: NotificationHandler,
        request_handlers: Mapping[str, RequestHandler] | None = None,
    ) -> None:
        self._send = send
        self._clock = clock
        self._on_notification = on_notification
        self._request_handlers = dict(request_handlers or {})
        self._decoder = MessageDecoder()
        self._next_id = 0
        self._pending: dict[int, tuple[str, Deferred[Any], IDelayedCall]] = {}
        self._closed = False

    def request(self, method: str, params: Any, timeout: float = DEFAULT_TIMEOUT) -> Deferred[Any]:
        """
        Send a request; the L{Deferred} fires with its C{result}, or fails
        with L{RpcError} on an error answer, a timeout or a closed connection.
        """
        if self._closed:
            return fail(ConnectionClosed(method))
        request_id = self._next_id
        self._next_id += 1
        d: Deferred[Any] = Deferred()
        timer = self._clock.callLater(timeout, self._timed_out, request_id, timeout)
        self._pending[request_id] = (method, d, timer)
        self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return d

    def notify(self, method: str, params: Any) -> None:
        if not self._closed:
            self._write({"jsonrpc": "2.0", "method": method, "params": params})

    def data_received(self, data: bytes) -> None:
        """
        Bytes from the peer; raises L{FramingError} when they are not LSP.
        """
        for body in self._decoder.feed(data):
            try:
                message = loads(body)
            except JSONError:
                self.log.warn("Ignoring a message that is not JSON: {body!r}", body=body[:200])
                continue
            if isinstance(message, dict):
                self._dispatch(message)
            else:
                self.log.warn("Ignoring a message that is not an object: {body!r}", body=body[:200])

    def close(self) -> None:
        """
        The peer is gone: fail every pending request.
        """
        self._closed = True
        pending, self._pending = self._pending, {}
        for method, d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(ConnectionClosed(method))

    def _write(self, message: Mapping[str, Any]) -> None:
        self._send(encode_message(message))

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if isinstance(method, str):
            if "id" in message:
                self._answer(message["id"], method, message.get("params"))
            else:
                try:
                    self._on_notification(method, message.get("params"))
                except Exception:
                    self.log.failure("Handling notification {method} failed", method=method)
            return
        request_id = message.get("id")
        entry = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if entry is None:
            self.log.warn("Ignoring a response to no pending request: {id!r}", id=request_id)
            return
        name, d, timer = entry
        timer.cancel()
        error = message.get("error")
        if error is not None:
            text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            d.errback(RpcError(name, text, code))
        else:
            d.callback(message.get("result"))

    def _answer(self, request_id: Any, method: str, params: Any) -> None:
        handler = self._request_handlers.get(method)
        if handler is None:
            self._write(
                {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {"code": METHOD_NOT_FOUND, "message": f"unsupported: {method}"},
                }
            )
            return
        try:
            result = handler(params)
        except Exception as e:
            self.log.failure("Answering {method} failed", method=method)
            self._write(
                {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": str(e)}}
            )
            return
        self._write({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _timed_out(self, request_id: int, timeout: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            method, d, _ = entry
            d.errback(RpcError(method, f"no answer within {timeout:g}s"))
