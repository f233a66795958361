"""
C{twistd cluso}: command-line options and the service they build.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage
from twisted.python.reflect import accumulateClassList

from cluso_router.backplane.redis import DEFAULT_PREFIX
from cluso_router.config import DEFAULT_LISTEN, ServerConfig
from cluso_router.router.liveness import DEFAULT_PING_INTERVAL
from cluso_router.security import load_token
from cluso_router.service import ClusoService
from cluso_router.sources import (
    ALL_SOURCES,
    Discovery,
    SourceOption,
    UnknownSource,
    discover_sources,
    source_options,
)
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY
from cluso_router.ws.limits import Limits
from cluso_router.ws.wamp.config import WampConfig, load_config


class Options(usage.Options):
    """
    Options of C{twistd cluso} and C{python -m cluso_router}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve the real-time event router for developer tools: the WebSocket "
        "endpoint /ws and the HTTP API /api/ on one port, for the workspace at --root."
    )
    optParameters = [
        [
            "listen",
            "l",
            DEFAULT_LISTEN,
            "Where to listen, as a Twisted endpoint string (e.g. tcp:3000:interface=127.0.0.1).",
        ],
        ["root", "r", None, "Workspace root served and watched (default: the current directory)."],
        [
            "ping-interval",
            None,
            DEFAULT_PING_INTERVAL,
            "Seconds between ping sweeps; a connection silent for a whole interval is dropped.",
            float,
        ],
        [
            "ui",
            None,
            None,
            "Serve the built single-page app in this directory at / instead of the "
            "dashboard: /assets/* as files, every other non-API path as its index.html.",
        ],
        [
            "sources",
            None,
            None,
            "Comma-separated event sources to run, or 'all', or '' for none "
            "(default: every source that applies to the root; see --list-sources).",
        ],
        [
            "max-body",
            None,
            DEFAULT_MAX_BODY,
            "Largest HTTP request body in bytes; a larger one is answered 413 without reading it.",
            int,
        ],
    ]
    optParameters += [
        [
            "auth",
            None,
            "token",
            "'token' (every request needs the access token) or 'none'; 'none' is refused "
            "unless the server listens on loopback addresses only.",
        ],
        [
            "token",
            None,
            None,
            "The access token (default: $CLUSO_TOKEN, else a random one, printed at start "
            "inside the URL to open). Other users can see it in the process list; prefer "
            "--token-file or CLUSO_TOKEN.",
        ],
        ["token-file", None, None, "Read the access token from this file."],
        [
            "max-connections",
            None,
            Limits.max_connections,
            "WebSocket connections at once; more are refused with HTTP 503.",
            int,
        ],
        [
            "max-subscriptions",
            None,
            Limits.max_subscriptions,
            "Subscriptions one connection may hold (and registrations a WAMP session may); "
            "more get too_many_subscriptions (too_many_registrations).",
            int,
        ],
        [
            "max-message-size",
            None,
            Limits.max_message_bytes,
            "Largest inbound WebSocket message in bytes; larger closes the connection with 1009.",
            int,
        ],
        [
            "max-queue-bytes",
            None,
            Limits.max_queue_bytes,
            "Bytes queued for a client that does not read; more closes it with 4008.",
            int,
        ],
        [
            "rate-limit",
            None,
            Limits.message_rate,
            "Inbound messages per second per connection (0: no limit); excess ones get "
            "rate_limited, and sending at over twice the rate closes with 1008.",
            float,
        ],
        [
            "rate-burst",
            None,
            Limits.message_burst,
            "Messages a connection may send at once above --rate-limit.",
            int,
        ],
        [
            "handshake-timeout",
            None,
            Limits.handshake_timeout,
            "Seconds a client has to complete the WebSocket opening handshake.",
            float,
        ],
    ]
    optParameters += [
        [
            "redis",
            None,
            None,
            "Share channels with other nodes through the Redis at redis://host:port/db "
            "(default: none, every channel lives on this node).",
        ],
        [
            "redis-prefix",
            None,
            DEFAULT_PREFIX,
            "Prefix of this deployment's Redis keys and pub/sub channels, so several "
            "deployments can share one Redis.",
        ],
        [
            "listen-rawsocket",
            None,
            None,
            "Also serve WAMP over RawSocket on this endpoint (e.g. "
            "tcp:8081:interface=127.0.0.1; default: none).",
        ],
        [
            "wamp-config",
            None,
            None,
            "TOML file with the WAMP realm, authentication (anonymous, tickets, WAMP-CRA, "
            "cryptosign) and roles with their permissions and rate limits (see docs/wamp.md).",
        ],
    ]
    optFlags = [
        ["list-sources", None, "Print the event sources found, then exit."],
        ["metrics-public", None, "Serve /metrics without the access token."],
    ]

    #: The event sources found when these options were made.
    discovery: Discovery
    #: Each source's options that became command-line options, by source name.
    accepted_options: dict[str, list[SourceOption]]
    #: Source options left out because their name was already taken.
    option_problems: list[str]

    def __new__(cls) -> Options:
        """
        Make the options of a subclass that also has the discovered event
        sources' options (C{usage.Options} reads options from the class).
        """
        discovery = discover_sources()
        flags, parameters, accepted, problems = _source_options(cls, discovery)
        with_sources = type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__doc__": cls.__doc__,
                "optFlags": flags,
                "optParameters": parameters,
                "discovery": discovery,
                "accepted_options": accepted,
                "option_problems": problems,
            },
        )
        options: Options = super().__new__(with_sources)
        return options

    def __init__(self) -> None:
        super().__init__()
        self["ignore"] = []
        self["allow-origin"] = []
        self["allow-host"] = []

    def opt_ignore(self, pattern: str) -> None:
        """
        Leave out paths matching this .gitignore-style pattern (repeatable).
        """
        self["ignore"].append(pattern)

    def opt_allow_origin(self, origin: str) -> None:
        """
        Also accept pages from this origin, exactly scheme://host:port (repeatable).
        """
        self["allow-origin"].append(origin)

    def opt_allow_host(self, host: str) -> None:
        """
        Also accept this Host header, as name or name:port (repeatable).
        """
        self["allow-host"].append(host)

    def postOptions(self) -> None:
        try:
            root = ServerConfig(root=self["root"] or os.getcwd()).root
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if self["list-sources"]:
            sys.stdout.write(self.describe_sources(root))
            raise SystemExit(0)
        sources = None
        if self["sources"] is not None:
            sources = tuple(n.strip() for n in self["sources"].split(",") if n.strip())
            try:
                self.discovery.select(sources, root)
            except UnknownSource as e:
                raise usage.UsageError(str(e)) from None
        try:
            wamp = load_config(self["wamp-config"]) if self["wamp-config"] else WampConfig()
            self["config"] = ServerConfig(
                root=root,
                listen=self["listen"],
                ping_interval=self["ping-interval"],
                ui=self["ui"],
                sources=sources,
                source_options={
                    name: {o.long: bool(self[o.long]) if o.flag else self[o.long] for o in opts}
                    for name, opts in self.accepted_options.items()
                },
                ignore=tuple(self["ignore"]),
                max_body=self["max-body"],
                auth=self["auth"],
                token=load_token(self["token"], self["token-file"])
                if self["auth"] == "token"
                else None,
                allowed_origins=tuple(self["allow-origin"]),
                allowed_hosts=tuple(self["allow-host"]),
                metrics_public=bool(self["metrics-public"]),
                limits=Limits(
                    max_connections=self["max-connections"],
                    max_subscriptions=self["max-subscriptions"],
                    max_message_bytes=self["max-message-size"],
                    max_queue_bytes=self["max-queue-bytes"],
                    message_rate=self["rate-limit"],
                    message_burst=self["rate-burst"],
                    handshake_timeout=self["handshake-timeout"],
                ),
                redis=self["redis"],
                redis_prefix=self["redis-prefix"],
                listen_rawsocket=self["listen-rawsocket"],
                wamp=wamp,
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def describe_sources(self, root: str) -> str:
        """
        What C{--list-sources} prints: each source, whether it runs by
        default for C{root}, its options, and any plugin that failed to load.
        """
        discovery = self.discovery
        default = {f.name for f in discovery.select(None, root)}
        width = max((len(name) for name in discovery.names), default=0)
        lines = [f"Event sources (default for {root}: {', '.join(sorted(default)) or 'none'}):"]
        for factory in discovery.factories:
            mark = "on " if factory.name in default else "off"
            lines.append(f"  {factory.name:<{width}}  {mark}  {factory.description}")
            for option in self.accepted_options.get(factory.name, []):
                value = "" if option.flag else f"={option.default}"
                if option.default is None:
                    value = "=VALUE"
                lines.append(f"  {'':<{width}}       --{option.long}{value}  {option.help}")
        if not discovery.factories:
            lines.append("  (none found)")
        problems = [*discovery.problems, *self.option_problems]
        if problems:
            lines.append("Problems:")
            lines.extend(f"  {problem}" for problem in problems)
        lines.append(f"Choose with --sources NAME,... ('{ALL_SOURCES}' for every one).")
        return "\n".join(lines) + "\n"


def _source_options(
    cls: type[usage.Options], discovery: Discovery
) -> tuple[list[list[Any]], list[list[Any]], dict[str, list[SourceOption]], list[str]]:
    """
    The discovered sources' options as C{optFlags} and C{optParameters}; an
    option whose name is taken (by the server or an earlier source) is left
    out, and a taken short name is dropped.
    """
    core: list[list[Any]] = []
    accumulateClassList(cls, "optParameters", core)
    accumulateClassList(cls, "optFlags", core)
    taken_long = {spec[0] for spec in core} | {"ignore", "help", "version"}
    taken_short = {spec[1] for spec in core if spec[1]}
    flags: list[list[Any]] = []
    parameters: list[list[Any]] = []
    accepted: dict[str, list[SourceOption]] = {}
    problems: list[str] = []
    for factory in discovery.factories:
        for option in source_options(factory):
            if option.long in taken_long:
                problems.append(f"source {factory.name}: option --{option.long} is already taken")
                continue
            short = option.short if option.short not in taken_short else None
            taken_long.add(option.long)
            if short:
                taken_short.add(short)
            if option.flag:
                flags.append([option.long, short, option.help])
            else:
                parameters.append([option.long, short, option.default, option.help, option.coerce])
            accepted.setdefault(factory.name, []).append(option)
    return flags, parameters, accepted, problems


def makeService(options: Options) -> IService:
    return ClusoService(options["config"])
