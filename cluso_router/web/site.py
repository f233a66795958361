"""
The one twisted.web site: C{/ws} for WebSocket clients, C{/api/} for HTTP.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..interfaces import IPublisher
from ..protocol import websocket_resource
from ..router import Router
from ._json import Directory
from .bodylimit import DEFAULT_MAX_BODY, LimitedRequest
from .events import PublishResource
from .health import health_resource
from .history import ChannelsResource
from .search import mount_search
from .validation import mount_validation


class SiteRoot(Directory):
    """
    The root of the site: its named routes first, then C{fallback} (a
    single-page app, when one is served) for every other path, else a JSON 404.
    """

    fallback: Resource | None = None

    def getChild(self, path: bytes, request: Request) -> Resource:
        if self.fallback is not None:
            child: Resource = self.fallback.getChildWithDefault(path, request)
            return child
        return super().getChild(path, request)


def build_root(router: Router, publisher: IPublisher | None = None) -> SiteRoot:
    """
    The resource tree; other parts add their routes with C{putChild} on it
    or on its C{api} child.
    """
    publisher = publisher if publisher is not None else router
    api = Directory(
        {
            b"events": PublishResource(publisher),
            b"health": health_resource(router),
            b"channels": ChannelsResource(router),
        }
    )
    root = SiteRoot({b"api": api})
    mount_search(root, router)
    mount_validation(root, router)
    root.putChild(b"ws", websocket_resource(router, publisher))
    return root


def build_site(root: Resource, max_body: int = DEFAULT_MAX_BODY) -> Site:
    """
    The site serving C{root}; request bodies above C{max_body} bytes get 413.
    """
    site = Site(root, requestFactory=LimitedRequest)
    site.max_body = max_body  # type: ignore[attr-defined]
    site.displayTracebacks = False
    return site
