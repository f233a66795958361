"""
Everything a server can be told, checked once, before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.endpoints import serverFromString

from cluso_router.backplane.redis import DEFAULT_PREFIX, RedisAddress
from cluso_router.router.history import DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENT_BYTES
from cluso_router.router.liveness import DEFAULT_PING_INTERVAL
from cluso_router.router.statsfeed import DEFAULT_STATS_INTERVAL
from cluso_router.security import (
    check_token,
    endpoint_is_loopback,
    generate_token,
    normalize_host,
    normalize_origin,
)
from cluso_router.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_LIFETIME
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY
from cluso_router.workspace.backups import BackupSettings
from cluso_router.workspace.files import DEFAULT_MAX_READ_BYTES
from cluso_router.ws.limits import Limits
from cluso_router.ws.wamp.config import WampConfig

DEFAULT_LISTEN = "tcp:3000:interface=127.0.0.1"


@dataclass(frozen=True)
class ServerConfig:
    """
    Everything C{twistd cluso} can be told, with its defaults.
    """

    root: str = "."
    #: Where to listen; C{None} for a server mounted in an application's
    #: own site (L{cluso_router.service.ClusoService.resource}).
    listen: str | None = DEFAULT_LISTEN
    ping_interval: float = DEFAULT_PING_INTERVAL
    #: Seconds between samples on the C{router.stats} channel; 0: none.
    stats_interval: float = DEFAULT_STATS_INTERVAL
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
    #: Largest C{POST /api/events/<channel>} body; C{None}: the largest
    #: WebSocket message (the limit of a client's C{send}).
    max_publish_body: int | None = None
    #: Largest file the files API's C{read} returns.
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    #: Bytes of events kept for recovery, in all channels.
    history_max_bytes: int = DEFAULT_HISTORY_BYTES
    #: Events whose JSON is larger are delivered but not kept.
    history_event_max_bytes: int = DEFAULT_HISTORY_EVENT_BYTES
    #: C{token} (the default) or C{none}, which only loopback addresses may use.
    auth: str = "token"
    #: The access token; a random one is made up when auth is on and none is given.
    token: str | None = None
    #: The file the token is kept in when it is the per-user one
    #: (L{cluso_router.tokenstore}); said at start.
    token_store: str | None = None
    #: Seconds a browser session (the cookie a C{?token=} sign-in sets) lasts.
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    #: Browser sessions kept at once; more end the oldest.
    max_sessions: int = DEFAULT_MAX_SESSIONS
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
    #: Where project backups are kept, and how much.
    backups: BackupSettings = field(default_factory=BackupSettings)
    #: Endpoint of the WAMP RawSocket transport; C{None} serves none.
    listen_rawsocket: str | None = None
    #: Listen with C{SO_REUSEPORT}, sharing the port with other processes.
    reuse_port: bool = False
    #: C{"i/N"} in the processes a C{--workers} supervisor runs (they leave
    #: the sign-in block to it), else C{None}.
    worker: str | None = None
    #: The WAMP realm, authentication methods and roles (C{--wamp-config}).
    wamp: WampConfig = field(default_factory=WampConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.realpath(self.root))
        if not os.path.isdir(self.root):
            problem = "not a directory" if os.path.exists(self.root) else "no such directory"
            raise ValueError(f"--root {self.root}: {problem}")
        if self.listen is not None:
            check_listen(self.listen)
        if self.redis is not None:
            RedisAddress.parse(self.redis)
        if self.ping_interval <= 0:
            raise ValueError("ping interval must be positive")
        if self.stats_interval < 0:
            raise ValueError("--stats-interval must be 0 (off) or a positive number of seconds")
        if self.max_body <= 0:
            raise ValueError("max body must be a positive number of bytes")
        if self.max_publish_body is None:
            object.__setattr__(self, "max_publish_body", self.limits.max_message_bytes)
        for name in (
            "max_publish_body",
            "max_read_bytes",
            "history_max_bytes",
            "history_event_max_bytes",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must not be negative")
        if self.session_lifetime <= 0:
            raise ValueError("session lifetime must be a positive number of seconds")
        if self.max_sessions < 1:
            raise ValueError("max sessions must be at least 1")
        if self.auth not in ("token", "none"):
            raise ValueError(f"auth must be 'token' or 'none', not {self.auth!r}")
        if self.auth == "none":
            for endpoint in filter(None, (self.listen, self.listen_rawsocket)):
                if endpoint_is_loopback(endpoint) is False:
                    raise ValueError(
                        f"--auth none is refused on {endpoint}, which other machines can "
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


def check_listen(description: str) -> None:
    """
    Refuse an endpoint string Twisted cannot make a server endpoint of,
    in words that name the option and show a good one.
    """
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except TypeError:
        reason = "missing or unknown parameters"
    except OSError as e:
        reason = f"{e.strerror}: {e.filename}" if e.filename else str(e)
    except (ValueError, KeyError, IndexError) as e:
        reason = str(e)
    else:
        return
    example = f"tcp:{description}:interface=127.0.0.1" if description.isdigit() else DEFAULT_LISTEN
    raise ValueError(
        f"--listen {description!r} is not a Twisted server endpoint ({reason}); "
        f"for example --listen {example}"
    )
