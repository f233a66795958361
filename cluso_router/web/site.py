"""
The one twisted.web site: C{/ws} for WebSocket clients, C{/api/} for HTTP.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from cluso_router.interfaces import IBackplane, IPublisher
from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.web.auth import AuthGuard, redacting_log_formatter
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY, LimitedRequest
from cluso_router.web.health import health_resource
from cluso_router.web.history import ChannelsResource
from cluso_router.web.publish import PublishResource
from cluso_router.web.resources import Directory
from cluso_router.ws.limits import Limits
from cluso_router.ws.protocol import websocket_resource
from cluso_router.ws.wamp import WampRealm


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


def build_root(
    router: Router,
    publisher: IPublisher | None = None,
    limits: Limits | None = None,
    policy: AccessPolicy | None = None,
    realm: WampRealm | None = None,
) -> SiteRoot:
    """
    The resource tree; other parts add their routes with C{putChild} on it
    or on its C{api} child. C{limits}, C{policy} and the WAMP C{realm} go
    to the WebSocket endpoint.
    """
    publisher = publisher if publisher is not None else router
    api = Directory(
        {
            b"events": PublishResource(publisher),
            b"health": health_resource(router, _backplane(router, publisher)),
            b"channels": ChannelsResource(_backplane(router, publisher)),
        }
    )
    root = SiteRoot({b"api": api})
    options: dict[str, Any] = {"limits": limits, "policy": policy}
    if realm is not None:
        options["wamp_realm"] = realm
    root.putChild(b"ws", websocket_resource(router, publisher, **options))
    return root


def _backplane(router: Router, publisher: IPublisher) -> IBackplane:
    """
    The publisher when it is a backplane (then history and health come
    from it), else the router.
    """
    return publisher if IBackplane.providedBy(publisher) else router


def build_site(
    root: Resource,
    max_body: int = DEFAULT_MAX_BODY,
    policy: AccessPolicy | None = None,
    public_paths: Collection[bytes] = (),
    handshake_paths: Collection[bytes] = (b"ws",),
) -> Site:
    """
    The site serving C{root}; request bodies above C{max_body} bytes get 413.
    With a C{policy}, every request passes it first (see L{AuthGuard}:
    C{public_paths} skip the token, C{handshake_paths} are WebSocket
    endpoints built by L{build_root} with the same policy, which check the
    token at the handshake). The access log never shows a token.
    """
    if policy is not None:
        root = AuthGuard(root, policy, public_paths, handshake_paths)
    site = Site(root, requestFactory=LimitedRequest, logFormatter=redacting_log_formatter)
    site.max_body = max_body  # type: ignore[attr-defined]
    site.displayTracebacks = False
    return site
