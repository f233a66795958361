"""
The one twisted.web site: C{/ws} for WebSocket clients, C{/api/} for HTTP.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from cluso_router.interfaces import IBackplane, IPublisher
from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.web.asyncapi import AsyncApiResource
from cluso_router.web.auth import AuthGuard, redacting_log_formatter
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY, LimitedRequest
from cluso_router.web.channel import DEFAULT_HEAD_DEADLINE, ClusoChannel
from cluso_router.web.health import health_resource
from cluso_router.web.history import ChannelsResource
from cluso_router.web.oauth import OAuthUnsupported
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
    *,
    policy: AccessPolicy,
    realm: WampRealm | None = None,
) -> SiteRoot:
    """
    The resource tree; other parts add their routes with C{putChild} on it
    or on its C{api} child. C{limits}, C{policy} and the WAMP C{realm} go
    to the WebSocket endpoint (put the tree behind L{guard} with the same
    policy for HTTP).
    """
    publisher = publisher if publisher is not None else router
    api = Directory(
        {
            b"events": PublishResource(publisher),
            b"health": health_resource(router, _backplane(router, publisher)),
            b"channels": ChannelsResource(_backplane(router, publisher)),
            b"oauth": OAuthUnsupported(),
        }
    )
    api.putChild(
        b"asyncapi.json",
        AsyncApiResource(router.claims, policy.auth_required),
    )
    root = SiteRoot({b"api": api})
    options: dict[str, Any] = {"limits": limits}
    if realm is not None:
        options["wamp_realm"] = realm
    root.putChild(b"ws", websocket_resource(router, publisher, policy=policy, **options))
    return root


def _backplane(router: Router, publisher: IPublisher) -> IBackplane:
    """
    The publisher when it is a backplane (then history and health come
    from it), else the router.
    """
    return publisher if IBackplane.providedBy(publisher) else router


def guard(
    root: Resource,
    policy: AccessPolicy,
    public_paths: Collection[bytes] = (),
    handshake_paths: Collection[bytes] = (b"ws",),
    strict_origin_paths: Collection[bytes] = (b"mcp",),
) -> Resource:
    """
    C{root} behind C{policy}: every request passes the policy first (see
    L{AuthGuard}). Mounted in a site of its own (L{build_site}) or in an
    application's site under a path.
    """
    return AuthGuard(root, policy, public_paths, handshake_paths, strict_origin_paths)


def build_site(
    root: Resource,
    max_body: int = DEFAULT_MAX_BODY,
    policy: AccessPolicy | None = None,
    public_paths: Collection[bytes] = (),
    handshake_paths: Collection[bytes] = (b"ws",),
    strict_origin_paths: Collection[bytes] = (b"mcp",),
    path_limits: Mapping[bytes, int] | None = None,
    head_deadline: float = DEFAULT_HEAD_DEADLINE,
) -> Site:
    """
    The site serving C{root}; request bodies above C{max_body} bytes get
    413, as do bodies above C{path_limits[prefix]} on paths with that
    prefix, and a request's head (its request line and headers) must arrive
    within C{head_deadline} seconds of its first byte. With a C{policy},
    every request passes it first (see L{AuthGuard}: C{public_paths} skip
    the token, C{handshake_paths} are WebSocket endpoints built by
    L{build_root} with the same policy, which check the token at the
    handshake; C{strict_origin_paths} refuse a foreign Origin on every
    method), and a body without credentials is refused unread. The access
    log never shows a token.
    """
    if policy is not None:
        root = guard(root, policy, public_paths, handshake_paths, strict_origin_paths)
    site = Site(root, requestFactory=LimitedRequest, logFormatter=redacting_log_formatter)
    site.protocol = ClusoChannel  # type: ignore[assignment]
    site.max_body = max_body  # type: ignore[attr-defined]
    site.path_limits = dict(path_limits or {})  # type: ignore[attr-defined]
    site.head_deadline = head_deadline  # type: ignore[attr-defined]
    site.policy = policy  # type: ignore[attr-defined]
    site.displayTracebacks = False
    return site
