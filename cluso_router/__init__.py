"""
cluso-router: a real-time event router for developer tools on Twisted.

The names below are the public API; everything else is an implementation
detail that may change.
"""

from ._version import __version__
from .event import DeliveryReport, Event
from .events import EventBroadcaster
from .health import PingSweeper
from .interfaces import IEventSourceFactory, IFrameEncoder, IPublisher, ISession
from .procedures import ProcedureError
from .protocol import ClusoWebSocketFactory, websocket_resource
from .router import Router
from .service import ClusoService, ServerConfig
from .sources import SourceContext
from .tap import Options, makeService

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
