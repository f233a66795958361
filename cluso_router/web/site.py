"""
The one twisted.web site: C{/ws} for WebSocket clients, C{/api/} for HTTP.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Site

from ..interfaces import IPublisher
from ..protocol import websocket_resource
from ..router import Router
from ._json import Directory
from .events import PublishResource
from .health import health_resource


def build_root(router: Router, publisher: IPublisher | None = None) -> Directory:
    """
    The resource tree; other parts add their routes with C{putChild} on it
    or on its C{api} child.
    """
    publisher = publisher if publisher is not None else router
    api = Directory(
        {
            b"events": PublishResource(publisher),
            b"health": health_resource(router),
        }
    )
    root = Directory({b"api": api})
    root.putChild(b"ws", websocket_resource(router, publisher))
    return root


def build_site(root: Resource) -> Site:
    site = Site(root)
    site.displayTracebacks = False
    return site
