"""
Assembling a whole server: the router, the backplane, the ping sweeper,
the web site on its endpoint and the event sources, composed in one
L{MultiService}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from cluso_router.backplane import RedisAddress, RedisBackplane, memory_backplane
from cluso_router.backplane.metrics import BackplaneCollector
from cluso_router.config import DEFAULT_LISTEN, ServerConfig
from cluso_router.interfaces import IBackplane
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.event import DeliveryReport
from cluso_router.router.liveness import PingSweeper
from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy, is_loopback_address
from cluso_router.sources import SourceContext, SourcesService
from cluso_router.sources.ai.channel import ai_chunk
from cluso_router.sources.lsp.channel import diagnostics_updated
from cluso_router.sources.search.channel import search_progress
from cluso_router.sources.validation.channel import validation_complete
from cluso_router.web import build_root, build_site
from cluso_router.web.metrics import MetricsResource, metrics_registry
from cluso_router.web.static import mount_static
from cluso_router.workspace.api import WorkspaceApi, install_workspace_api
from cluso_router.workspace.git import GitEventType, git_event
from cluso_router.workspace.ledger import FileChangeLedger, FileEvent, file_changed
from cluso_router.ws.wamp import WampRealm
from cluso_router.ws.wamp.cluster import WampCluster
from cluso_router.ws.wamp.rawsocket import RawSocketFactory

__all__ = ["DEFAULT_LISTEN", "ClusoService", "EventBroadcaster", "ServerConfig"]


class EventBroadcaster(Broadcaster):
    """
    The broadcaster with the original server's typed methods, one per
    built-in channel. Each is a thin call of the helper that lives with the
    part owning the channel (a third-party source writes its own helper
    the same way); C{emit} and C{emit_stamped} publish on any channel.
    """

    def file_changed(self, file: str, event: FileEvent) -> DeliveryReport:
        return file_changed(self, file, event)

    def diagnostics_updated(
        self, diagnostics: Sequence[Mapping[str, Any]], cleared: bool = False, **extra: Any
    ) -> DeliveryReport:
        return diagnostics_updated(self, diagnostics, cleared, **extra)

    def ai_chunk(
        self, id: str, chunk: str, index: int, finished: bool, **extra: Any
    ) -> DeliveryReport:
        return ai_chunk(self, id, chunk, index, finished, **extra)

    def search_progress(
        self,
        query: str,
        completed: int,
        total: int | None,
        results: Sequence[Mapping[str, Any]],
        **extra: Any,
    ) -> DeliveryReport:
        return search_progress(self, query, completed, total, results, **extra)

    def validation_complete(self, validation: Mapping[str, Any]) -> DeliveryReport:
        return validation_complete(self, validation)

    def git_event(self, type: GitEventType, message: str) -> DeliveryReport:
        return git_event(self, type, message)


@implementer(IStreamServerEndpoint)
class AnnouncingEndpoint:
    """
    An endpoint that, once listening, remembers its port and logs where the
    server is (and, with a token, the URL that signs a browser in).

    With C{loopback_only}, a port reachable from other machines is closed
    again and the listen fails: C{--auth none} must not serve the network.
    C{what}, for an endpoint that is not the web site, names what listens.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        loopback_only: bool,
        token: str | None,
        what: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._loopback_only = loopback_only
        self._token = token
        self._what = what
        self.port: IListeningPort | None = None

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._endpoint.listen(factory).addCallback(self._listened)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        address = port.getHost()
        host = getattr(address, "host", "localhost")
        if self._loopback_only and hasattr(address, "host") and not is_loopback_address(host):
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
        if self._what is not None:
            self.log.info(
                "cluso-router {what} listening on {host}:{port}",
                what=self._what,
                host=host,
                port=getattr(address, "port", ""),
            )
            return port
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


def listening_service(
    reactor: Any,
    description: str,
    factory: IProtocolFactory,
    token: str | None,
    name: str = "web",
) -> tuple[StreamServerEndpointService, AnnouncingEndpoint]:
    """
    A service listening on endpoint C{description} with C{factory}; failing
    to listen (the port is taken) raises from its C{startService}, so the
    server does not start half-way.
    """
    endpoint = AnnouncingEndpoint(
        serverFromString(reactor, description),
        loopback_only=token is None,
        token=token if name == "web" else None,
        what="WAMP RawSocket" if name == "rawsocket" else None,
    )
    service = StreamServerEndpointService(endpoint, factory)
    service._raiseSynchronously = True
    service.setName(name)
    return service, endpoint


class ClusoService(MultiService):
    """
    The whole server. Its parts are public attributes so plugins and
    embedding code can reach the router and the broadcaster.

    Children stop in reverse order: the sources first, then the port
    closes, then every connection is closed with 1001 by the router.
    """

    def __init__(self, config: ServerConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.router = Router(cwd=config.root, clock=reactor)
        self.backplane = self._backplane(config, reactor)
        self.broadcaster = EventBroadcaster(self.backplane)
        self.file_changes = FileChangeLedger(self.broadcaster, clock=reactor)
        self.sweeper = PingSweeper(self.router, config.ping_interval, clock=reactor)
        self.policy = AccessPolicy(
            config.token,
            config.allowed_origins,
            config.allowed_hosts,
            refusals=self.router.refusals,
        )
        self.realm = WampRealm(self.router, self.backplane, config.wamp)
        self.root_resource = build_root(
            self.router,
            self.backplane,
            limits=config.limits,
            policy=self.policy,
            realm=self.realm,
        )
        registry = metrics_registry(self.router, self.sweeper)
        registry.register(BackplaneCollector(self.backplane))
        self.root_resource.putChild(b"metrics", MetricsResource(registry))
        mount_static(self.root_resource, config.ui)
        self.workspace_api: WorkspaceApi = install_workspace_api(
            config.root,
            self.router,
            self.broadcaster,
            self.file_changes,
            self.root_resource,
            reactor,
        )
        self.site = build_site(
            self.root_resource,
            config.max_body,
            policy=self.policy,
            public_paths=[b"metrics"] if config.metrics_public else [],
        )
        self.site.timeOut = config.limits.handshake_timeout
        self.web, self.endpoint = listening_service(reactor, config.listen, self.site, config.token)
        self.rawsocket: StreamServerEndpointService | None = None
        self.rawsocket_endpoint: AnnouncingEndpoint | None = None
        if config.listen_rawsocket is not None:
            self.rawsocket, self.rawsocket_endpoint = listening_service(
                reactor,
                config.listen_rawsocket,
                RawSocketFactory(
                    self.router, self.realm, self.backplane, config.limits, self.policy
                ),
                config.token,
                name="rawsocket",
            )
        self.sources = SourcesService(self.source_context, config.sources, config.source_options)
        self.router.setServiceParent(self)
        if isinstance(self.backplane, RedisBackplane):
            self.backplane.setServiceParent(self)
            WampCluster(self.realm, self.backplane, clock=reactor).setServiceParent(self)
        self.sweeper.setServiceParent(self)
        self.web.setServiceParent(self)
        if self.rawsocket is not None:
            self.rawsocket.setServiceParent(self)
        self.sources.setServiceParent(self)

    def _backplane(self, config: ServerConfig, reactor: Any) -> IBackplane:
        if config.redis is None:
            return memory_backplane(self.router)
        return RedisBackplane(
            self.router,
            RedisAddress.parse(config.redis),
            config.redis_prefix,
            reactor=reactor,
            history_size=self.router.history.size,
        )

    @property
    def port(self) -> IListeningPort | None:
        """
        The listening port, once listening.
        """
        return self.endpoint.port

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
