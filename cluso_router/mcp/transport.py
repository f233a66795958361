"""
C{/mcp}: the Streamable HTTP transport of the Model Context Protocol, on
twisted.web (no second event loop).

Every client message is a C{POST}; a request is answered with JSON, or with
an event stream when progress or notifications come before its result
(C{tools/call}, C{subscriptions/listen}). A 2025-11-25 client starts a
session with C{initialize}, names it in C{Mcp-Session-Id} from then on,
may hold one C{GET} stream for notifications, and ends it with C{DELETE}.
A 2026-07-28 client has no session: every request carries its revision,
and its method and name in headers too, which must agree with the body.

The site's guard has already checked the token, the Host and the Origin
(for every method here) when a request arrives.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

import cluso_router.mcp.protocol as protocol
from cluso_router._json import dumps
from cluso_router.mcp.protocol import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    KEEP_ALIVE,
    LEGACY_VERSIONS,
    META_CAPABILITIES,
    META_SUBSCRIPTION,
    META_VERSION,
    METHOD_NOT_FOUND,
    MODERN_VERSIONS,
    SUPPORTED_VERSIONS,
    UNSUPPORTED_VERSION,
    Message,
    RpcError,
    is_modern,
    parse_message,
    sse,
)
from cluso_router.mcp.resources import channel_of
from cluso_router.mcp.server import MODERN_METHODS, Exchange, McpServer
from cluso_router.mcp.session import LegacySession

#: Requests whose name goes in C{Mcp-Name} too (2026-07-28), by the field.
NAMED: Final = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}
#: The notifications a listen stream may ask for, and the answer.
LIST_CHANGES: Final = ("toolsListChanged", "resourcesListChanged")


def _header(request: Request, name: str) -> str | None:
    value = request.getHeader(name)
    return value if isinstance(value, str) else None


def _json(request: Request, status: int, body: Mapping[str, Any] | None = None) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"cache-control", b"no-store")
    if body is None:
        return b""
    request.setHeader(b"content-type", b"application/json")
    return dumps(body)


def _refuse(request: Request, failure: RpcError) -> bytes:
    return _json(request, failure.status, protocol.error(None, failure))


def _stream(request: Request) -> None:
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"text/event-stream")
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"x-accel-buffering", b"no")


def decode_name(value: str) -> str:
    """
    An C{Mcp-Name} header's value: as sent, or decoded from the
    C{=?base64?...?=} form a name that is not plain ASCII is sent in.
    """
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RpcError(HEADER_MISMATCH, "Header mismatch: bad Mcp-Name", status=400) from None
    return value


class McpResource(Resource):
    """
    The MCP endpoint of one L{McpServer}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, server: McpServer) -> None:
        super().__init__()
        self._server = server

    def render(self, request: Request) -> bytes | int:
        method = request.method
        try:
            if method == b"POST":
                return self._post(request)
            if method == b"GET":
                return self._get(request)
            if method == b"DELETE":
                return self._delete(request)
        except RpcError as e:
            return _refuse(request, e)
        request.setHeader(b"allow", b"GET, POST, DELETE")
        return _refuse(request, RpcError(INVALID_REQUEST, "Method not allowed", status=405))

    # POST: every client message.

    def _post(self, request: Request) -> bytes | int:
        accept = _header(request, "accept") or ""
        if "application/json" not in accept or "text/event-stream" not in accept:
            raise RpcError(
                INVALID_REQUEST,
                "Not Acceptable: accept both application/json and text/event-stream",
                status=406,
            )
        if not (_header(request, "content-type") or "").startswith("application/json"):
            raise RpcError(INVALID_REQUEST, "Unsupported Media Type: send JSON", status=415)
        assert request.content is not None
        message = parse_message(request.content.read())
        version = _header(request, "mcp-protocol-version")
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise _unsupported(version)
        if is_modern(version, message):
            return self._modern(request, message, version)
        return self._legacy(request, message)

    def _legacy(self, request: Request, message: Message) -> bytes | int:
        if message.method == "initialize" and message.kind == "request":
            version, answer = self._server.initialize(message.params)
            legacy = self._server.clients.start_session(version)
            request.setHeader(b"mcp-session-id", legacy.id.encode("ascii"))
            return _json(request, 200, protocol.result(message.id, answer))
        legacy = self._session(request)
        if message.kind != "request":
            if message.method == "notifications/cancelled":
                legacy.cancel(message.params.get("requestId"))
            return _json(request, 202)
        return self._answer(request, Exchange(message, legacy))

    def _modern(self, request: Request, message: Message, version: str | None) -> bytes | int:
        if message.kind != "request":
            return _json(request, 202)
        meta = message.meta
        stated = meta.get(META_VERSION)
        if version is None or stated is None or version != stated:
            raise RpcError(
                HEADER_MISMATCH,
                "Header mismatch: MCP-Protocol-Version must equal the request's "
                "_meta protocolVersion",
                status=400,
            )
        if stated not in MODERN_VERSIONS:
            raise _unsupported(stated)
        if not isinstance(meta.get(META_CAPABILITIES), dict):
            raise RpcError(
                INVALID_PARAMS, "Invalid params: _meta has no clientCapabilities", status=400
            )
        if _header(request, "mcp-method") != message.method:
            raise RpcError(HEADER_MISMATCH, "Header mismatch: Mcp-Method", status=400)
        field = NAMED.get(message.method or "")
        if field is not None:
            name = _header(request, "mcp-name")
            if name is None or decode_name(name) != message.params.get(field):
                raise RpcError(HEADER_MISMATCH, "Header mismatch: Mcp-Name", status=400)
        if message.method not in MODERN_METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {message.method}", status=404)
        if message.method == "subscriptions/listen":
            return self._listen(request, message)
        return self._answer(request, Exchange(message))

    def _session(self, request: Request) -> LegacySession:
        session_id = _header(request, "mcp-session-id")
        if session_id is None:
            raise RpcError(INVALID_REQUEST, "Bad Request: Missing session ID", status=400)
        legacy = self._server.clients.session(session_id)
        if legacy is None:
            raise RpcError(INVALID_REQUEST, "Session not found", status=404)
        legacy.stream.seen()
        request.setHeader(b"mcp-session-id", session_id.encode("ascii"))
        return legacy

    # Answers.

    def _answer(self, request: Request, exchange: Exchange) -> int:
        """
        Answer a request: with an event stream for a tool call (its
        progress, then its result), else with JSON once the result is ready.
        A request cancelled (or, in 2026-07-28, whose client went away)
        gets no answer.
        """
        message = exchange.message
        streamed = message.method == "tools/call"
        gone = [False]

        if streamed:
            _stream(request)
            token = message.meta.get("progressToken")
            if isinstance(token, (str, int)) and not isinstance(token, bool):
                exchange.report = _reporter(request, token, gone)
        answering: Deferred[dict[str, Any]] | None = None

        def lost(_: object) -> None:
            gone[0] = True
            if exchange.modern and answering is not None and not answering.called:
                answering.cancel()

        request.notifyFinish().addErrback(lost)
        answering = self._server.answer(exchange)
        legacy = exchange.session
        if legacy is not None:
            legacy.calls[message.id] = answering

        def forget(_: object) -> None:
            if legacy is not None and legacy.calls.get(message.id) is answering:
                del legacy.calls[message.id]

        def answered(value: dict[str, Any]) -> None:
            forget(None)
            self._send(request, protocol.result(message.id, value), streamed, gone)

        def failed(failure: Failure) -> None:
            forget(None)
            if failure.check(CancelledError) or gone[0]:
                if not gone[0]:
                    request.finish()
                return
            if failure.check(RpcError):
                error: RpcError = failure.value  # type: ignore[assignment]
            else:
                self.log.failure("Answering {method} failed", failure, method=message.method)
                error = RpcError(protocol.INTERNAL_ERROR, "Internal error")
            self._send(request, protocol.error(message.id, error), streamed, gone)

        answering.addCallbacks(answered, failed)
        return NOT_DONE_YET

    @staticmethod
    def _send(request: Request, body: dict[str, Any], streamed: bool, gone: list[bool]) -> None:
        if gone[0]:
            return
        if streamed:
            request.write(sse(body))
        else:
            request.write(_json(request, 200, body))
        request.finish()

    def _listen(self, request: Request, message: Message) -> int:
        """
        C{subscriptions/listen}: a stream that starts with the
        acknowledgment of what is honoured (channel resources, list
        changes) and then carries those notifications until the client
        closes it.
        """
        asked = message.params.get("notifications")
        asked = asked if isinstance(asked, dict) else {}
        clients = self._server.clients
        honoured: dict[str, Any] = {key: True for key in LIST_CHANGES if asked.get(key) is True}
        uris = asked.get("resourceSubscriptions")
        channels: list[str] = []
        if isinstance(uris, list):
            honoured["resourceSubscriptions"] = clients.subscribable(uris)
            channels = [channel_of(uri) or "" for uri in honoured["resourceSubscriptions"]]
        ack = protocol.notification(
            "notifications/subscriptions/acknowledged",
            {"_meta": {META_SUBSCRIPTION: message.id}, "notifications": honoured},
        )
        _stream(request)
        clients.listen(request, message.id, channels, honoured, sse(ack))
        return NOT_DONE_YET

    # GET and DELETE: a legacy session's stream and end.

    def _get(self, request: Request) -> bytes | int:
        version = _header(request, "mcp-protocol-version")
        if version is not None and version not in LEGACY_VERSIONS:
            request.setHeader(b"allow", b"POST")
            raise RpcError(INVALID_REQUEST, "Method not allowed: POST only", status=405)
        if "text/event-stream" not in (_header(request, "accept") or ""):
            raise RpcError(INVALID_REQUEST, "Not Acceptable: accept text/event-stream", status=406)
        legacy = self._session(request)
        if legacy.stream.is_open:
            raise RpcError(INVALID_REQUEST, "Conflict: this session has a stream", status=409)
        _stream(request)
        request.write(KEEP_ALIVE)
        legacy.stream.open(request)
        return NOT_DONE_YET

    def _delete(self, request: Request) -> bytes:
        version = _header(request, "mcp-protocol-version")
        if version is not None and version not in LEGACY_VERSIONS:
            request.setHeader(b"allow", b"POST")
            raise RpcError(INVALID_REQUEST, "Method not allowed: POST only", status=405)
        self._session(request).stream.end()
        return _json(request, 204)


def _unsupported(version: str) -> RpcError:
    return RpcError(
        UNSUPPORTED_VERSION,
        "Unsupported protocol version",
        {"supported": list(SUPPORTED_VERSIONS), "requested": version},
        status=400,
    )


def _reporter(request: Request, token: str | int, gone: list[bool]) -> Any:
    """
    What writes a tool call's progress notifications on its stream.
    """

    def report(progress: float, total: float | None, line: str) -> None:
        if gone[0] or request.finished:
            return
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if line:
            params["message"] = line
        request.write(sse(protocol.notification("notifications/progress", params)))

    return report
