"""
Assembling a whole server: the router, the ping sweeper and the web site
composed in one L{MultiService}, listening on an endpoint string.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.logger import Logger

from cluso_router.backplane import RedisAddress, RedisBackplane, memory_backplane
from cluso_router.backplane.metrics import BackplaneCollector
from cluso_router.backplane.redis import DEFAULT_PREFIX
from cluso_router.interfaces import IBackplane
from cluso_router.router.broadcaster import EventBroadcaster
from cluso_router.router.liveness import DEFAULT_PING_INTERVAL, PingSweeper
from cluso_router.router.router import Router
from cluso_router.security import (
    AccessPolicy,
    check_token,
    endpoint_is_loopback,
    generate_token,
    is_loopback_address,
    normalize_host,
    normalize_origin,
)
from cluso_router.sources.base import SourceContext, SourcesService
from cluso_router.web import build_root, build_site
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY
from cluso_router.web.metrics import MetricsResource, metrics_registry
from cluso_router.web.static import mount_static
from cluso_router.workspace.api import install_workspace_api
from cluso_router.workspace.ledger import FileChangeLedger
from cluso_router.ws.limits import Limits

DEFAULT_LISTEN = "tcp:3000:interface=127.0.0.1"


@dataclass(frozen=True)
class ServerConfig:
    """
    Everything C{twistd cluso} can be told, with its defaults.
    """

    root: str = "."
    listen: str = DEFAULT_LISTEN
    ping_interval: float = DEFAULT_PING_INTERVAL
    #: A built single-page app served at C{/} instead of the dashboard.
    ui: str | None = None
    #: Event sources to run by name; C{None} runs all that apply to the root.
    sources: tuple[str, ...] | None = None
    #: Option values of the event sources, by source name.
    source_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: C{.gitignore}-style patterns the sources that walk the root leave out.
    ignore: tuple[str, ...] = ()
    #: Largest HTTP request body in bytes; a larger one gets 413 unread.
    max_body: int = DEFAULT_MAX_BODY
    #: C{token} (the default) or C{none}, which only loopback addresses may use.
    auth: str = "token"
    #: The access token; a random one is made up when auth is on and none is given.
    token: str | None = None
    #: Origins allowed besides the server's own, as C{scheme://host:port}.
    allowed_origins: tuple[str, ...] = ()
    #: Host header values allowed besides the loopback names.
    allowed_hosts: tuple[str, ...] = ()
    #: Serve C{/metrics} without the token.
    metrics_public: bool = False
    limits: Limits = field(default_factory=Limits)
    #: C{redis://host:port/db} of the Redis shared with other nodes; C{None}
    #: keeps every channel on this node.
    redis: str | None = None
    #: Prefix of every Redis key and pub/sub channel of this deployment.
    redis_prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.realpath(self.root))
        if not os.path.isdir(self.root):
            raise ValueError(f"root is not a directory: {self.root}")
        if self.redis is not None:
            RedisAddress.parse(self.redis)
        if self.ping_interval <= 0:
            raise ValueError("ping interval must be positive")
        if self.max_body <= 0:
            raise ValueError("max body must be a positive number of bytes")
        if self.auth not in ("token", "none"):
            raise ValueError(f"auth must be 'token' or 'none', not {self.auth!r}")
        if self.auth == "none":
            if endpoint_is_loopback(self.listen) is False:
                raise ValueError(
                    f"--auth none is refused on {self.listen}, which other machines can "
                    "reach; listen on a loopback address (tcp:PORT:interface=127.0.0.1) "
                    "or use a token"
                )
            object.__setattr__(self, "token", None)
        elif self.token is None:
            object.__setattr__(self, "token", generate_token())
        else:
            check_token(self.token)
        for origin in self.allowed_origins:
            normalize_origin(origin)
        for host in self.allowed_hosts:
            normalize_host(host)
        if self.ui is not None:
            object.__setattr__(self, "ui", os.path.realpath(self.ui))
            if not os.path.isfile(os.path.join(self.ui, "index.html")):
                raise ValueError(f"UI directory has no index.html: {self.ui}")


class ListeningService(Service):
    """
    Listens on an endpoint while running and logs where, once it knows the
    real port (C{tcp:0} picks a free one).

    A failure to listen that is known at start (the port is taken) is raised
    from C{startService}, so C{twistd} reports it and exits. So is listening
    on an address reachable from other machines when C{loopback_only}.

    C{token}, when given, is logged once inside the URL that opens the
    server in a browser.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        description: str,
        factory: IProtocolFactory,
        loopback_only: bool = False,
        token: str | None = None,
    ) -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.loopback_only = loopback_only
        self._token = token
        self.port: IListeningPort | None = None
        self._listening: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self.description)
        failures: list[Any] = []
        self._listening = endpoint.listen(self.factory)
        self._listening.addCallback(self._listened).addErrback(failures.append)
        if failures:
            failures[0].raiseException()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        address = port.getHost()
        host = getattr(address, "host", "localhost")
        if self.loopback_only and hasattr(address, "host") and not is_loopback_address(host):
            port.stopListening()
            raise ValueError(
                f"--auth none is refused on {host}, which other machines can reach; "
                "listen on a loopback address (tcp:PORT:interface=127.0.0.1) or use a token"
            )
        self.port = port
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{getattr(address, 'port', '')}/"
        self.log.info(
            "cluso-router listening on {url} (WebSocket {ws_url})",
            url=url,
            ws_url="ws" + url[4:] + "ws",
        )
        if self._token is not None:
            self.log.info(
                "Open {url}?token={token} to sign in from a browser", url=url, token=self._token
            )
        return port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


class ClusoService(MultiService):
    """
    The whole server. Its parts are public attributes so plugins and
    embedding code can reach the router and the broadcaster.

    Children stop in reverse order: the port closes first, then every
    connection is closed with 1001 by the router.
    """

    def __init__(self, config: ServerConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.router = Router(cwd=config.root, clock=reactor)
        self.backplane: IBackplane = memory_backplane(self.router)
        if config.redis is not None:
            self.backplane = RedisBackplane(
                self.router,
                RedisAddress.parse(config.redis),
                config.redis_prefix,
                reactor=reactor,
                history_size=self.router.history.size,
            )
        self.broadcaster = EventBroadcaster(self.backplane)
        self.file_changes = FileChangeLedger(self.broadcaster, clock=reactor)
        self.sweeper = PingSweeper(self.router, config.ping_interval, clock=reactor)
        self.policy = AccessPolicy(
            config.token,
            config.allowed_origins,
            config.allowed_hosts,
            refusals=self.router.refusals,
        )
        self.root_resource = build_root(
            self.router, self.backplane, limits=config.limits, policy=self.policy
        )
        registry = metrics_registry(self.router, self.sweeper)
        registry.register(BackplaneCollector(self.backplane))
        self.root_resource.putChild(b"metrics", MetricsResource(registry))
        mount_static(self.root_resource, config.ui)
        self.workspace_api = install_workspace_api(self, reactor)
        self.site = build_site(
            self.root_resource,
            config.max_body,
            policy=self.policy,
            public_paths=[b"metrics"] if config.metrics_public else [],
        )
        self.site.timeOut = config.limits.handshake_timeout
        self.web = ListeningService(
            reactor,
            config.listen,
            self.site,
            loopback_only=config.token is None,
            token=config.token,
        )
        self.router.setServiceParent(self)
        if isinstance(self.backplane, RedisBackplane):
            self.backplane.setServiceParent(self)
        self.sweeper.setServiceParent(self)
        self.web.setServiceParent(self)
        self.sources = SourcesService(self.source_context, config.sources, config.source_options)
        self.sources.setServiceParent(self)

    def source_context(self) -> SourceContext:
        """
        What event sources are given; read when they start, so parts
        replaced after construction are the ones they see.
        """
        return SourceContext(
            router=self.router,
            broadcaster=self.broadcaster,
            file_changes=self.file_changes,
            root=self.config.root,
            reactor=self.reactor,
            ignore=self.config.ignore,
            web_root=self.root_resource,
        )
