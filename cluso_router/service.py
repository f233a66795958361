"""
Assembling a whole server: the router, the backplane, the ping sweeper,
the web site on its endpoint and the event sources, composed in one
L{MultiService}.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.resource import Resource
from zope.interface import implementer

from cluso_router._reuseport import reuse_port_endpoint
from cluso_router.backplane import RedisAddress, RedisBackplane, memory_backplane
from cluso_router.backplane.metrics import BackplaneCollector
from cluso_router.config import DEFAULT_LISTEN, ServerConfig
from cluso_router.interfaces import IBackplane
from cluso_router.mcp import install_mcp
from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.event import DeliveryReport
from cluso_router.router.history import MemoryHistory
from cluso_router.router.lag import ReactorLagProbe
from cluso_router.router.liveness import PingSweeper
from cluso_router.router.router import Router
from cluso_router.router.statsfeed import RouterStatsFeed
from cluso_router.security import AccessPolicy, is_loopback_address
from cluso_router.sessions import SessionTable
from cluso_router.sources import SourceContext, SourcesService
from cluso_router.sources.ai.channel import ai_chunk
from cluso_router.sources.lsp.channel import diagnostics_updated
from cluso_router.sources.search.channel import search_progress
from cluso_router.sources.validation.channel import validation_complete
from cluso_router.web import build_root, build_site
from cluso_router.web.metrics import MetricsResource, metrics_registry
from cluso_router.web.site import guard
from cluso_router.web.static import mount_static
from cluso_router.workspace.api import WorkspaceApi, install_workspace_api
from cluso_router.workspace.git import GitEventType, git_event
from cluso_router.workspace.ledger import FileChangeLedger, FileEvent, file_changed
from cluso_router.ws.wamp import WampRealm
from cluso_router.ws.wamp.cluster import WampCluster
from cluso_router.ws.wamp.rawsocket import RawSocketFactory

__all__ = ["DEFAULT_LISTEN", "CannotListen", "ClusoService", "EventBroadcaster", "ServerConfig"]


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


#: The mode of a UNIX socket the server creates, unless its endpoint
#: string gives one (C{unix:PATH:mode=660}).
UNIX_SOCKET_MODE: Final = "600"
_RULE: Final = "=" * 72


def sign_in_banner(url: str, token: str, dashboard: bool, token_store: str | None) -> str:
    """
    The block printed at start that tells how to sign a browser in: the
    dashboard reads the token from the URL's fragment (never sent to the
    server, so never in any log); a C{--ui} app needs the C{?token=}
    sign-in, which trades the token for a session cookie.
    """
    quoted = quote(token, safe="")
    link = f"{url}#token={quoted}" if dashboard else f"{url}?token={quoted}"
    kept = (
        f"The token is kept in {token_store} (--rotate-token makes a new one)."
        if token_store is not None
        else "The token is the one given with --token, --token-file or CLUSO_TOKEN."
    )
    return "\n".join(
        [
            "",
            _RULE,
            "  cluso-router is ready. To sign in from a browser, open:",
            "",
            f"      {link}",
            "",
            f"  {kept}",
            '  Scripts send it as the header "Authorization: Bearer <token>".',
            _RULE,
        ]
    )


@implementer(IStreamServerEndpoint)
class AnnouncingEndpoint:
    """
    An endpoint that, once listening, remembers its port and logs where the
    server is (and, with auth on, the block that says how to sign in).

    With C{loopback_only}, a port reachable from other machines is closed
    again and the listen fails: C{--auth none} must not serve the network.

    @param sign_in: makes the sign-in block from the server's URL.
    @param what: names what listens, for an endpoint that is not the web
        site (which is announced with its URL).
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        loopback_only: bool,
        sign_in: Callable[[str], str] | None = None,
        what: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._loopback_only = loopback_only
        self._sign_in = sign_in
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
        if self._sign_in is not None:
            self.log.info("{banner}", banner=self._sign_in(url))
        return port


def private_unix_endpoint(description: str) -> str:
    """
    C{description} with C{mode=600} added when it is a UNIX socket without
    a mode of its own: Twisted's default, C{666}, lets every user of the
    machine connect.
    """
    kind, *arguments = re.split(r"(?<!\\):", description)
    if kind.strip().lower() != "unix":
        return description
    if any(argument.partition("=")[0].strip() == "mode" for argument in arguments):
        return description
    return f"{description}:mode={UNIX_SOCKET_MODE}"


class CannotListen(Exception):
    """
    The server's address could not be taken; the message is one line that
    says which address, why, and the option that chooses another.
    """


def cannot_listen(error: CannotListenError, option: str = "--listen") -> str:
    """
    What to tell the user when listening failed with C{error}; C{option}
    is the one that chooses the address.
    """
    interface, port = error.interface, error.port
    if not interface:
        where = f"port {port} (every interface)"
    else:
        where = f"[{interface}]:{port}" if ":" in interface else f"{interface}:{port}"
    reason = getattr(error.socketError, "errno", None)
    if reason == errno.EADDRINUSE:
        why = "the address is already in use (is another server running there?)"
    elif reason == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    else:
        why = str(getattr(error.socketError, "strerror", None) or error.socketError)
    other = port + 1 if isinstance(port, int) and 0 < port < 65535 else 3000
    host = interface if interface and ":" not in interface else "127.0.0.1"
    return (
        f"cannot listen on {where}: {why}; choose another address with {option}, "
        f"e.g. {option} tcp:{other}:interface={host}"
    )


class WebService(StreamServerEndpointService):
    """
    The site on its endpoint. Failing to listen raises from
    C{privilegedStartService} (so the server does not start half-way), as
    a L{CannotListen} when the address could not be taken.

    @ivar option: the command-line option that chooses the address.
    """

    _raiseSynchronously = True
    option = "--listen"

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise CannotListen(cannot_listen(e, self.option)) from None


def listening_service(
    reactor: Any,
    description: str,
    factory: IProtocolFactory,
    token: str | None,
    sign_in: Callable[[str], str] | None = None,
    name: str = "web",
    reuse_port: bool = False,
) -> tuple[StreamServerEndpointService, AnnouncingEndpoint]:
    """
    A service listening on endpoint C{description} (a UNIX socket there is
    its owner's only, unless the description sets its mode) with
    C{factory}; see L{WebService}. Without a C{token} it listens on
    loopback addresses only.
    """
    endpoint = AnnouncingEndpoint(
        reuse_port_endpoint(reactor, description)
        if reuse_port
        else serverFromString(reactor, private_unix_endpoint(description)),
        loopback_only=token is None,
        sign_in=sign_in,
        what="WAMP RawSocket" if name == "rawsocket" else None,
    )
    service = WebService(endpoint, factory)
    service.option = f"--listen-{name}" if name != "web" else "--listen"
    service.setName(name)
    return service, endpoint


class ClusoService(MultiService):
    """
    The whole server. Its parts are public attributes so plugins and
    embedding code can reach the router and the broadcaster.

    Children stop in reverse order: walks over the workspace are stopped,
    then the sources, then the port closes, then every connection is closed
    with 1001 by the router.
    """

    def __init__(self, config: ServerConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.router = Router(
            cwd=config.root,
            clock=reactor,
            history=MemoryHistory(
                reactor,
                max_bytes=config.history_max_bytes,
                max_event_bytes=config.history_event_max_bytes,
            ),
        )
        self.backplane = self._backplane(config, reactor)
        self.broadcaster = EventBroadcaster(self.backplane)
        self.file_changes = FileChangeLedger(self.broadcaster, clock=reactor)
        self.sweeper = PingSweeper(self.router, config.ping_interval, clock=reactor)
        self.lag = ReactorLagProbe(reactor)
        self.stats = (
            RouterStatsFeed(self.router, self.lag, config.stats_interval, clock=reactor)
            if config.stats_interval
            else None
        )
        self.policy = AccessPolicy(
            config.token,
            config.allowed_origins,
            config.allowed_hosts,
            refusals=self.router.refusals,
            sessions=SessionTable(reactor, config.session_lifetime, config.max_sessions),
        )
        self.realm = WampRealm(self.router, self.backplane, config.wamp)
        self.root_resource = build_root(
            self.router,
            self.backplane,
            limits=config.limits,
            policy=self.policy,
            realm=self.realm,
        )
        registry = metrics_registry(self.router, self.sweeper, self.lag)
        registry.register(BackplaneCollector(self.backplane))
        self.root_resource.putChild(b"metrics", MetricsResource(registry))
        self.mcp = install_mcp(
            self.root_resource, self.router, self.backplane, config.limits, reactor
        )
        public_pages = mount_static(self.root_resource, config.ui)
        self.workspace_api: WorkspaceApi = install_workspace_api(
            config.root,
            self.router,
            self.broadcaster,
            self.file_changes,
            self.root_resource,
            reactor,
            config.backups,
            config.ignore,
            max_read_bytes=config.max_read_bytes,
        )
        public_paths = public_pages | ({b"metrics"} if config.metrics_public else set())
        #: Everything the server serves, behind its access policy: what an
        #: application mounts in its own site (see L{mount}).
        self.resource = guard(self.root_resource, self.policy, public_paths)
        self.site = build_site(
            self.root_resource,
            config.max_body,
            policy=self.policy,
            public_paths=public_paths,
            path_limits={b"/api/events/": config.max_publish_body or config.max_body},
            head_deadline=config.limits.handshake_timeout,
        )
        self.site.timeOut = config.limits.handshake_timeout
        self.web: StreamServerEndpointService | None = None
        self.endpoint: AnnouncingEndpoint | None = None
        if config.listen is not None:
            self.web, self.endpoint = listening_service(
                reactor,
                config.listen,
                self.site,
                config.token,
                self._sign_in_banner() if config.worker is None else None,
                reuse_port=config.reuse_port,
            )
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
        self.mcp.setServiceParent(self)
        if isinstance(self.backplane, RedisBackplane):
            self.backplane.setServiceParent(self)
            WampCluster(self.realm, self.backplane, clock=reactor).setServiceParent(self)
        self.sweeper.setServiceParent(self)
        self.lag.setServiceParent(self)
        if self.stats is not None:
            self.stats.setServiceParent(self)
        if self.web is not None:
            self.web.setServiceParent(self)
        if self.rawsocket is not None:
            self.rawsocket.setServiceParent(self)
        self.sources.setServiceParent(self)
        self.workspace_api.setServiceParent(self)

    def stopService(self) -> Deferred[None] | None:
        """
        End every browser session first, so no cookie outlives the server,
        then stop the children.
        """
        self.policy.sessions.revoke_all()
        return super().stopService()  # type: ignore[no-any-return]

    def _sign_in_banner(self) -> Callable[[str], str] | None:
        config = self.config
        token = config.token
        if token is None:
            return None
        return lambda url: sign_in_banner(url, token, config.ui is None, config.token_store)

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
        The listening port, once listening (never, for a mounted server).
        """
        return self.endpoint.port if self.endpoint is not None else None

    def mount(self, parent: Resource, path: bytes) -> None:
        """
        Serve everything (C{/ws}, C{/api}, the dashboard, C{/mcp}) below
        C{path} of an application's own resource tree, behind this server's
        access policy. Give this service to the application's
        C{MultiService} too, so its router, sweeps, sources and shutdown
        run with the application. (The request head deadline and the
        refusal of unauthenticated bodies before reading are properties of
        this server's own site; an application's site has its own.)
        """
        parent.putChild(path, self.resource)

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
