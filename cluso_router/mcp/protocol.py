"""
The Model Context Protocol on the wire: the revisions served, JSON-RPC
messages checked at the door, the answers built, and their Server-Sent
Events framing.

Two revisions share the endpoint. 2025-11-25 (and 2025-06-18, the same for
what is served here) has an C{initialize} handshake and sessions named by
C{Mcp-Session-Id}; 2026-07-28 has neither: every request carries its
revision in C{_meta}, and results say C{resultType}. Which one a request
speaks is read from it (L{is_modern}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cluso_router import _json
from cluso_router._json import dumps

#: Revisions with the C{initialize} handshake, newest first.
LEGACY_VERSIONS: Final = ("2025-11-25", "2025-06-18")
#: Revisions without sessions.
MODERN_VERSIONS: Final = ("2026-07-28",)
SUPPORTED_VERSIONS: Final = (*MODERN_VERSIONS, *LEGACY_VERSIONS)

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
#: Resource not found, in the legacy revisions (2026-07-28 uses INVALID_PARAMS).
RESOURCE_NOT_FOUND: Final = -32002
HEADER_MISMATCH: Final = -32020
UNSUPPORTED_VERSION: Final = -32022

META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION: Final = "io.modelcontextprotocol/subscriptionId"

#: Tool names the protocol allows.
TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: The SSE comment written to keep a quiet stream open.
KEEP_ALIVE: Final = b": keep-alive\n\n"

Kind = Literal["request", "notification", "response"]


class RpcError(Exception):
    """
    A JSON-RPC error answer: C{code}, C{message} and optional C{data}, and
    the HTTP status it goes with when it answers the whole POST (200 when
    it is an ordinary answer to a request).
    """

    def __init__(self, code: int, message: str, data: Any = None, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status

    def error(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


@dataclass(frozen=True)
class Message:
    """
    One checked JSON-RPC message from a client.

    @ivar id: the request's id (a string or an integer), C{None} for others.
    """

    kind: Kind
    method: str | None = None
    id: str | int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> Mapping[str, Any]:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else {}


def parse_message(body: bytes) -> Message:
    """
    The one JSON-RPC 2.0 message in a POST body.

    @raise RpcError: with status 400 for anything else (not strict JSON, a
        batch, a bad id, non-object params).
    """
    try:
        value = _json.loads(body)
    except _json.JSONError as e:
        raise RpcError(PARSE_ERROR, f"Parse error: {e}", status=400) from None
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "Invalid request: one JSON-RPC 2.0 object", status=400)
    has_id = "id" in value
    message_id = value.get("id")
    if has_id and (isinstance(message_id, bool) or not isinstance(message_id, (str, int))):
        raise RpcError(
            INVALID_REQUEST, "Invalid request: id must be a string or integer", status=400
        )
    method = value.get("method")
    if method is None:
        if has_id and ("result" in value or "error" in value):
            return Message("response", id=message_id)
        raise RpcError(INVALID_REQUEST, "Invalid request: no method", status=400)
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "Invalid request: method must be a string", status=400)
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, "Invalid request: params must be an object", status=400)
    return Message("request" if has_id else "notification", method, message_id, params)


def is_modern(header_version: str | None, message: Message) -> bool:
    """
    Whether a request speaks a revision without sessions: it names one that
    has no handshake in its C{MCP-Protocol-Version} header, or carries its
    revision in C{_meta} as only those revisions do.
    """
    if header_version is not None and header_version not in LEGACY_VERSIONS:
        return True
    return META_VERSION in message.meta


def result(message_id: Any, value: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message_id, "result": dict(value)}


def error(message_id: Any, failure: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message_id, "error": failure.error()}


def notification(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = dict(params)
    return body


def sse(message: Mapping[str, Any]) -> bytes:
    """
    One message as a Server-Sent Event of type C{message} (strict JSON has
    no line breaks outside strings, where they are escaped).
    """
    return b"event: message\ndata: " + dumps(message) + b"\n\n"
