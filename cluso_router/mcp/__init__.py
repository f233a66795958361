"""
The router's operations and channels for coding agents, over the Model
Context Protocol: every operation is a tool, every channel a resource that
can be read and subscribed to, every MCP client a session of the router.

This package sits at the level of L{cluso_router.web}: it reads the
operation table and the channel claims, and is installed by
L{cluso_router.service}; no event source imports it and it imports none.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource

from cluso_router.interfaces import IBackplane
from cluso_router.mcp.server import McpServer
from cluso_router.mcp.transport import McpResource
from cluso_router.router.router import Router
from cluso_router.web.routes import operation_table
from cluso_router.ws.limits import Limits

__all__ = ["McpResource", "McpServer", "install_mcp"]


def install_mcp(
    root: Resource, router: Router, backplane: IBackplane, limits: Limits, clock: Any
) -> McpServer:
    """
    Serve C{/mcp} below C{root}: tools from the operations mounted there and
    the router's procedures, resources from the router's channels.
    """
    server = McpServer(router, backplane, operation_table(root), limits, clock)
    root.putChild(b"mcp", McpResource(server))
    return server
