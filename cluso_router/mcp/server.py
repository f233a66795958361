"""
What the MCP endpoint answers, whatever revision asks: the handshake or
discovery, the tool and resource lists, tool calls and resource reads, and
subscriptions. The HTTP side (headers, status codes, streams) is
L{cluso_router.mcp.transport}'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime

from cluso_router._version import __version__
from cluso_router.interfaces import IBackplane
from cluso_router.mcp.protocol import (
    INVALID_PARAMS,
    LEGACY_VERSIONS,
    META_SERVER_INFO,
    METHOD_NOT_FOUND,
    RESOURCE_NOT_FOUND,
    SUPPORTED_VERSIONS,
    Message,
    RpcError,
)
from cluso_router.mcp.resources import TEMPLATES, ResourceCatalog
from cluso_router.mcp.session import Clients, LegacySession
from cluso_router.mcp.stream import RESOURCES_CHANGED, TOOLS_CHANGED
from cluso_router.mcp.tools import Report, ToolCatalog
from cluso_router.router.router import Router
from cluso_router.web.routes import OperationTable
from cluso_router.ws.limits import Limits

SERVER_INFO: Final = {"name": "cluso-router", "version": __version__}
CAPABILITIES: Final = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
}
#: Entries of one page of a list; a longer list continues with a cursor.
PAGE_SIZE: Final = 100
#: Methods a 2026-07-28 request may name (it has no ping, handshake or
#: per-resource subscribe).
MODERN_METHODS: Final = frozenset(
    {
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "subscriptions/listen",
    }
)
#: Results a 2026-07-28 client may cache, and how (they change as sources
#: start and stop, and depend on the token, so not at all).
_CACHEABLE: Final = frozenset(
    {"server/discover", "tools/list", "resources/list", "resources/templates/list",
     "resources/read"}
)  # fmt: skip


@dataclass
class Exchange:
    """
    One request being answered.

    @ivar session: the legacy session it belongs to, or C{None} for a
        2026-07-28 request.
    @ivar report: where progress goes, when the client asked for it and
        the answer is a stream.
    """

    message: Message
    session: LegacySession | None = None
    report: Report | None = None

    @property
    def modern(self) -> bool:
        return self.session is None


def page(items: Sequence[Any], cursor: Any) -> tuple[list[Any], str | None]:
    """
    The page of C{items} that C{cursor} (from the previous page) names, and
    the cursor of the next page, if any.

    @raise RpcError: a cursor this server did not give.
    """
    start = 0
    if cursor is not None:
        if not isinstance(cursor, str) or not cursor.isdigit() or int(cursor) > len(items):
            raise RpcError(INVALID_PARAMS, f"Invalid cursor: {cursor!r}")
        start = int(cursor)
    end = start + PAGE_SIZE
    return list(items[start:end]), (str(end) if end < len(items) else None)


class McpServer(Service):
    """
    The MCP side of one router: its tools, its resources and its clients.
    Stopping it ends every client's stream.
    """

    name = "mcp"

    def __init__(
        self,
        router: Router,
        backplane: IBackplane,
        table: OperationTable,
        limits: Limits,
        clock: IReactorTime,
    ) -> None:
        self.router = router
        self.tools = ToolCatalog(table, router, clock)
        self.resources = ResourceCatalog(router.claims, backplane, table)
        self.clients = Clients(router, limits, clock)
        self.tools.changes.add(self._tools_changed)
        router.claims.changes.add(self._resources_changed)

    def stopService(self) -> None:
        """
        End every client's stream and stop following the registries.
        """
        super().stopService()
        self.tools.changes.remove(self._tools_changed)
        self.router.claims.changes.remove(self._resources_changed)
        self.tools.close()
        self.clients.end_all()

    def _tools_changed(self) -> None:
        self.clients.announce(TOOLS_CHANGED, "toolsListChanged")

    def _resources_changed(self) -> None:
        self.clients.announce(RESOURCES_CHANGED, "resourcesListChanged")

    @property
    def instructions(self) -> str:
        return (
            f"cluso-router serves the workspace {self.router.cwd}. Its tools read and "
            "change the workspace's files and git repository, search it and run its "
            "validators; tools marked read-only change nothing. Its resources are the "
            "live channels (cluso://channels/<channel>: recent events; subscribe to "
            "hear when one publishes) and the files (cluso://files/<path>)."
        )

    def initialize(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """
        The legacy handshake: the revision agreed (the client's, when served
        here, else the newest with a handshake) and the answer.
        """
        asked = params.get("protocolVersion")
        version = asked if asked in LEGACY_VERSIONS else LEGACY_VERSIONS[0]
        return version, {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO,
            "instructions": self.instructions,
        }

    def answer(self, exchange: Exchange) -> Deferred[dict[str, Any]]:
        """
        The result of a request (but C{initialize} and
        C{subscriptions/listen}, which the transport answers itself).

        @raise RpcError: through the Deferred, for an unknown method or bad
            parameters.
        """
        message = exchange.message
        method = message.method or ""
        handler = getattr(self, "_" + method.replace("/", "_"), None)
        known = method in (MODERN_METHODS if exchange.modern else _LEGACY_METHODS)
        if handler is None or not known:
            return fail(RpcError(METHOD_NOT_FOUND, f"Method not found: {method}"))
        answered: Deferred[dict[str, Any]] = maybeDeferred(handler, message.params, exchange)
        if exchange.modern:
            answered.addCallback(_complete, method in _CACHEABLE)
        return answered

    def _ping(self, params: Mapping[str, Any], exchange: Exchange) -> dict[str, Any]:
        return {}

    def _server_discover(self, params: Mapping[str, Any], exchange: Exchange) -> dict[str, Any]:
        return {
            "supportedVersions": list(SUPPORTED_VERSIONS),
            "capabilities": CAPABILITIES,
            "instructions": self.instructions,
        }

    def _tools_list(self, params: Mapping[str, Any], exchange: Exchange) -> dict[str, Any]:
        tools, cursor = page([tool.descriptor for tool in self.tools.tools()], params.get("cursor"))
        return _listed("tools", tools, cursor)

    def _tools_call(
        self, params: Mapping[str, Any], exchange: Exchange
    ) -> Deferred[dict[str, Any]]:
        name = params.get("name")
        tool = self.tools.find(name) if isinstance(name, str) else None
        if tool is None:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = params.get("arguments", {})
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: arguments must be an object")
        return self.tools.call(tool, arguments, exchange.report)

    def _resources_list(self, params: Mapping[str, Any], exchange: Exchange) -> dict[str, Any]:
        resources, cursor = page(self.resources.resources(), params.get("cursor"))
        return _listed("resources", resources, cursor)

    def _resources_templates_list(
        self, params: Mapping[str, Any], exchange: Exchange
    ) -> dict[str, Any]:
        templates, cursor = page(TEMPLATES, params.get("cursor"))
        return _listed("resourceTemplates", templates, cursor)

    def _resources_read(
        self, params: Mapping[str, Any], exchange: Exchange
    ) -> Deferred[dict[str, Any]]:
        uri = _uri(params)
        not_found = INVALID_PARAMS if exchange.modern else RESOURCE_NOT_FOUND
        return self.resources.read(uri, not_found).addCallback(
            lambda contents: {"contents": contents}
        )

    def _resources_subscribe(
        self, params: Mapping[str, Any], exchange: Exchange
    ) -> Deferred[dict[str, Any]]:
        assert exchange.session is not None
        self.clients.subscribe(exchange.session, _uri(params))
        return succeed({})

    def _resources_unsubscribe(
        self, params: Mapping[str, Any], exchange: Exchange
    ) -> Deferred[dict[str, Any]]:
        assert exchange.session is not None
        self.clients.unsubscribe(exchange.session, _uri(params))
        return succeed({})


_LEGACY_METHODS: Final = frozenset(
    {
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    }
)


def _uri(params: Mapping[str, Any]) -> str:
    uri = params.get("uri")
    if not isinstance(uri, str) or not uri:
        raise RpcError(INVALID_PARAMS, "Invalid params: uri must be a string")
    return uri


def _listed(key: str, items: list[Any], cursor: str | None) -> dict[str, Any]:
    listed: dict[str, Any] = {key: items}
    if cursor is not None:
        listed["nextCursor"] = cursor
    return listed


def _complete(result: dict[str, Any], cacheable: bool) -> dict[str, Any]:
    """
    A result as 2026-07-28 has them: complete, naming the server, and for
    lists and reads, not to be cached.
    """
    result = {**result, "resultType": "complete"}
    result["_meta"] = {**result.get("_meta", {}), META_SERVER_INFO: SERVER_INFO}
    if cacheable:
        result.update(ttlMs=0, cacheScope="private")
    return result
