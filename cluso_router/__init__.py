"""
cluso-router: a real-time event router for developer tools on Twisted.

The names below are the public API; everything else is an implementation
detail that may change.
"""

from cluso_router._version import __version__
from cluso_router.interfaces import IEventSourceFactory, IFrameEncoder, IPublisher, ISession
from cluso_router.router.event import DeliveryReport, Event
from cluso_router.router.liveness import PingSweeper
from cluso_router.router.procedures import ProcedureError
from cluso_router.router.router import Router
from cluso_router.service import ClusoService, EventBroadcaster, ServerConfig
from cluso_router.sources import SourceContext
from cluso_router.tap import Options, makeService
from cluso_router.ws.protocol import ClusoWebSocketFactory, websocket_resource

__all__ = [
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
    "makeService",
    "websocket_resource",
]
