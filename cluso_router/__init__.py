"""
cluso-router: a real-time event router for developer tools on Twisted.

The names below are the public API; everything else is an implementation
detail that may change. They load on first use, so that a plugin importing
one small module (C{cluso_router.sources.plugin}, say) does not load the
whole server while twistd lists its plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluso_router._lazy import lazy_exports
from cluso_router._version import __version__

if TYPE_CHECKING:
    from cluso_router.interfaces import (
        IEventSourceFactory,
        IFrameEncoder,
        IPublisher,
        ISession,
    )
    from cluso_router.router.event import DeliveryReport, Event
    from cluso_router.router.liveness import PingSweeper
    from cluso_router.router.procedures import ProcedureError
    from cluso_router.router.router import Router
    from cluso_router.security import AccessPolicy
    from cluso_router.service import ClusoService, EventBroadcaster, ServerConfig
    from cluso_router.sources import SourceContext
    from cluso_router.tap import Options, makeService
    from cluso_router.web.site import build_site, guard
    from cluso_router.ws.protocol import ClusoWebSocketFactory, websocket_resource

_HOMES = {
    "AccessPolicy": "cluso_router.security",
    "ClusoService": "cluso_router.service",
    "ClusoWebSocketFactory": "cluso_router.ws.protocol",
    "DeliveryReport": "cluso_router.router.event",
    "Event": "cluso_router.router.event",
    "EventBroadcaster": "cluso_router.service",
    "IEventSourceFactory": "cluso_router.interfaces",
    "IFrameEncoder": "cluso_router.interfaces",
    "IPublisher": "cluso_router.interfaces",
    "ISession": "cluso_router.interfaces",
    "Options": "cluso_router.tap",
    "PingSweeper": "cluso_router.router.liveness",
    "ProcedureError": "cluso_router.router.procedures",
    "Router": "cluso_router.router.router",
    "ServerConfig": "cluso_router.service",
    "SourceContext": "cluso_router.sources",
    "build_site": "cluso_router.web.site",
    "guard": "cluso_router.web.site",
    "makeService": "cluso_router.tap",
    "websocket_resource": "cluso_router.ws.protocol",
}

__all__ = [
    "AccessPolicy",
    "ClusoService",
    "ClusoWebSocketFactory",
    "DeliveryReport",
    "Event",
    "EventBroadcaster",
    "IEventSourceFactory",
    "IFrameEncoder",
    "IPublisher",
    "ISession",
    "Options",
    "PingSweeper",
    "ProcedureError",
    "Router",
    "ServerConfig",
    "SourceContext",
    "__version__",
    "build_site",
    "guard",
    "makeService",
    "websocket_resource",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
