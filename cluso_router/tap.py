"""
C{twistd cluso}: command-line options and the service they build.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import IService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.reflect import accumulateClassList

from cluso_router._heap import FreezeStartupHeap
from cluso_router._logfile import private_log_observer, twistd_log_file
from cluso_router._reuseport import reuse_port_endpoint
from cluso_router._version import __version__
from cluso_router.backplane.redis import DEFAULT_PREFIX
from cluso_router.config import DEFAULT_LISTEN, ServerConfig
from cluso_router.interfaces import IEventSourceFactory
from cluso_router.router.history import DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENT_BYTES
from cluso_router.router.liveness import DEFAULT_PING_INTERVAL
from cluso_router.router.statsfeed import DEFAULT_STATS_INTERVAL
from cluso_router.security import load_token
from cluso_router.service import ClusoService, sign_in_banner
from cluso_router.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_LIFETIME
from cluso_router.sources import ALL_SOURCES, Discovery, UnknownSource, discover_sources
from cluso_router.sources.options import (
    OptionSpec,
    name_coercions,
    option_aliases,
    option_specs,
    parse_source_options,
)
from cluso_router.tokenstore import stored_token, token_path
from cluso_router.web.bodylimit import DEFAULT_MAX_BODY
from cluso_router.workspace.backup_walk import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, Budget
from cluso_router.workspace.backups import DEFAULT_KEEP, BackupSettings
from cluso_router.workspace.files import DEFAULT_MAX_READ_BYTES
from cluso_router.ws.limits import Limits
from cluso_router.ws.wamp.config import WampConfig, load_config


def versions() -> str:
    """
    What C{--version} prints: this project's version, then those it runs on.
    """
    import autobahn
    import twisted

    return (
        f"cluso-router {__version__}\n"
        f"Twisted {twisted.__version__}, Autobahn {autobahn.__version__}, "
        f"Python {platform.python_version()}\n"
    )


class Options(usage.Options):
    """
    Options of C{twistd cluso} and of the C{cluso} command.
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
            "stats-interval",
            None,
            DEFAULT_STATS_INTERVAL,
            "Seconds between samples on the router.stats channel (0: none).",
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
            "max-publish-body",
            None,
            None,
            "Largest POST /api/events/<channel> body in bytes (default: --max-message-size).",
            int,
        ],
        [
            "max-read-bytes",
            None,
            DEFAULT_MAX_READ_BYTES,
            "Largest file POST /api/files/read returns, in bytes; a larger one is refused.",
            int,
        ],
        [
            "history-max-bytes",
            None,
            DEFAULT_HISTORY_BYTES,
            "Bytes of events kept for clients that reconnect, in all channels; the least "
            "recently published channel's oldest events go first.",
            int,
        ],
        [
            "history-event-max-bytes",
            None,
            DEFAULT_HISTORY_EVENT_BYTES,
            "Events whose JSON is larger than this are delivered but not kept for recovery.",
            int,
        ],
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
            "The access token (default: $CLUSO_TOKEN, else the per-user one kept in "
            "$XDG_STATE_HOME/cluso-router/token, made on first start; printed at start "
            "inside the URL to open). Other users can see it in the process list; prefer "
            "--token-file or CLUSO_TOKEN.",
        ],
        ["token-file", None, None, "Read the access token from this file."],
        [
            "session-lifetime",
            None,
            DEFAULT_SESSION_LIFETIME,
            "Seconds a browser signed in with ?token= stays signed in (its session cookie).",
            float,
        ],
        [
            "max-sessions",
            None,
            DEFAULT_MAX_SESSIONS,
            "Browser sessions kept at once; signing in beyond ends the oldest.",
            int,
        ],
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
            "workers",
            None,
            1,
            "Run this many server processes behind the one --listen port (SO_REUSEPORT), "
            "sharing channels through --redis, which they need.",
            int,
        ],
        [
            "wamp-config",
            None,
            None,
            "TOML file with the WAMP realm, authentication (anonymous, tickets, WAMP-CRA, "
            "cryptosign) and roles with their permissions and rate limits (see docs/wamp.md).",
        ],
    ]
    optParameters += [
        [
            "backup-dir",
            None,
            None,
            "Where project backups are kept (default: $XDG_DATA_HOME/cluso-router/backups, "
            "else ~/.local/share/cluso-router/backups).",
        ],
        [
            "backup-max-files",
            None,
            DEFAULT_MAX_FILES,
            "Most files one backup may hold; a larger snapshot is refused.",
            int,
        ],
        [
            "backup-max-bytes",
            None,
            DEFAULT_MAX_BYTES,
            "Most bytes one backup may hold; a larger snapshot is refused.",
            int,
        ],
        [
            "backup-keep",
            None,
            DEFAULT_KEEP,
            "Backups kept per project; the oldest beyond are deleted after each new one "
            "(0 keeps all).",
            int,
        ],
    ]
    optFlags = [
        ["list-sources", None, "Print the event sources found, then exit."],
        ["metrics-public", None, "Serve /metrics without the access token."],
        [
            "reuse-port",
            None,
            "Listen with SO_REUSEPORT, sharing the --listen port with other processes "
            "(each --workers process does).",
        ],
        [
            "rotate-token",
            None,
            "Replace the per-user token (in $XDG_STATE_HOME/cluso-router/token) with a "
            "new one; signed-in browsers and scripts must sign in again.",
        ],
    ]

    #: The event sources found when these options were made.
    discovery: Discovery
    #: The sources' options on the command line: name -> (source, option).
    source_options: dict[str, tuple[str, OptionSpec]]
    #: Command-line names declared more than once: name -> who declared it.
    option_clashes: dict[str, list[str]]
    #: Every source's declaration of each command-line name (aliases too).
    option_declarations: dict[str, dict[str, OptionSpec]]
    #: Sources whose options could not be read, with why.
    option_problems: list[str]

    def __new__(cls) -> Options:
        """
        Make the options of a subclass that also has the discovered event
        sources' options (C{usage.Options} reads options from the class).
        """
        discovery = discover_sources()
        flags, parameters, offered, declared, problems = _source_options(cls, discovery)
        with_sources = type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__doc__": cls.__doc__,
                "optFlags": flags,
                "optParameters": parameters,
                "discovery": discovery,
                "source_options": offered,
                "option_clashes": {
                    cli: owners for cli, owners in declared.items() if len(owners) > 1
                },
                "option_declarations": {
                    cli: {owner: spec for owner, spec in owners.items() if spec is not None}
                    for cli, owners in declared.items()
                },
                "option_problems": problems,
            },
        )
        options: Options = super().__new__(with_sources)
        return options

    def __init__(self) -> None:
        super().__init__()
        name_coercions(self)
        self["ignore"] = []
        self["allow-origin"] = []
        self["allow-host"] = []
        self._aliases: set[str] = set()
        for factory in self.discovery.factories:
            for alias, option in _aliases(factory).items():
                canonical = self._cli_of(factory.name, option)
                if canonical is not None and alias not in self.synonyms:
                    self.synonyms[alias] = canonical
                    flag = self.source_options[canonical][1].flag
                    self.longOpt.append(alias if flag else alias + "=")
                    self._aliases.add(alias)

    def getUsage(self, width: int | None = None) -> str:
        """
        The usage text, without the sources' older option names (their
        options' help names them).
        """
        every = self.longOpt
        self.longOpt = [name for name in every if name.rstrip("=") not in self._aliases]
        try:
            return super().getUsage(width)
        finally:
            self.longOpt = every

    def _running_owner(self, cli: str, running: set[str]) -> tuple[str, OptionSpec] | None:
        """
        The running source a shared command-line name belongs to, when it
        is declared by several sources and one of them runs.
        """
        for source, spec in self.option_declarations.get(cli, {}).items():
            if source in running:
                return source, spec
        return None

    def _cli_of(self, source: str, option: str) -> str | None:
        for cli, (owner, spec) in self.source_options.items():
            if owner == source and spec.name == option:
                return cli
        return None

    def opt_version(self) -> None:
        """
        Print cluso-router's version (and Twisted's, Autobahn's) and exit.
        """
        sys.stdout.write(versions())
        raise SystemExit(0)

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
            chosen = self.discovery.select(sources, root)
        except UnknownSource as e:
            raise usage.UsageError(str(e)) from None
        source_values = self._source_values(chosen)
        self._check_workers()
        try:
            token, token_store = self._token()
            wamp = load_config(self["wamp-config"]) if self["wamp-config"] else WampConfig()
            self["config"] = ServerConfig(
                root=root,
                listen=self["listen"],
                ping_interval=self["ping-interval"],
                stats_interval=self["stats-interval"],
                ui=self["ui"],
                sources=sources,
                source_options=source_values,
                ignore=tuple(self["ignore"]),
                max_body=self["max-body"],
                max_publish_body=self["max-publish-body"],
                max_read_bytes=self["max-read-bytes"],
                history_max_bytes=self["history-max-bytes"],
                history_event_max_bytes=self["history-event-max-bytes"],
                auth=self["auth"],
                token=token,
                token_store=token_store,
                session_lifetime=self["session-lifetime"],
                max_sessions=self["max-sessions"],
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
                backups=self._backup_settings(),
                listen_rawsocket=self["listen-rawsocket"],
                reuse_port=bool(self["reuse-port"]),
                worker=os.environ.get("CLUSO_WORKER") or None,
                wamp=wamp,
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        #: The arguments as given, for the processes of --workers.
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def _check_workers(self) -> None:
        workers = self["workers"]
        if workers < 1:
            raise usage.UsageError("--workers must be at least 1")
        if workers == 1 and not self["reuse-port"]:
            return
        if workers > 1 and not self["redis"]:
            raise usage.UsageError(
                "--workers needs --redis: the workers share channels through it "
                "(e.g. --redis redis://127.0.0.1:6379/0)"
            )
        if workers > 1 and self["listen-rawsocket"]:
            raise usage.UsageError("--workers cannot be combined with --listen-rawsocket yet")
        from twisted.internet import reactor

        try:
            reuse_port_endpoint(reactor, self["listen"])
        except ValueError as e:
            raise usage.UsageError(f"--listen: {e}") from None

    def _source_values(self, chosen: list[IEventSourceFactory]) -> dict[str, dict[str, Any]]:
        """
        The option values of each chosen source, parsed by the source's own
        options class.

        @raise usage.UsageError: an option of a source that is not chosen
            was given, a chosen source shares an option name with another
            source or with the server, or a value is wrong.
        """
        names = {factory.name for factory in chosen}
        for cli, owners in sorted(self.option_clashes.items()):
            running = [owner for owner in owners if owner == _SERVER or owner in names]
            if len(running) > 1:
                listed = " and ".join(
                    "the server" if owner == _SERVER else f"source {owner}" for owner in running
                )
                raise usage.UsageError(
                    f"--{cli} is declared by {listed}; an option name must be unique "
                    "(rename the option, or run one of these sources only)"
                )
        given: dict[str, dict[str, Any]] = {}
        for cli, (registered, registered_spec) in self.source_options.items():
            value = self[cli]
            if not value if registered_spec.flag else value is None:
                continue
            source, spec = self._running_owner(cli, names) or (registered, registered_spec)
            if source not in names:
                raise usage.UsageError(
                    f"--{cli} is an option of the {source} source, which is not running; "
                    f"add {source} to --sources"
                )
            if spec.flag != registered_spec.flag:
                raise usage.UsageError(
                    f"--{cli} is declared by source {source} and source {registered} "
                    "as different kinds of option; rename one of them"
                )
            given.setdefault(source, {})[spec.name] = True if spec.flag else value
        return {
            factory.name: parse_source_options(factory, given.get(factory.name, {}))
            for factory in chosen
        }

    def _token(self) -> tuple[str | None, str | None]:
        """
        The token and, when it is the per-user one, the file it is kept in:
        C{--token}, C{--token-file} or C{CLUSO_TOKEN} first, else the
        per-user token (made, or with C{--rotate-token} replaced, here).
        """
        if self["auth"] != "token":
            if self["rotate-token"]:
                raise ValueError("--rotate-token needs token auth (not --auth none)")
            return None, None
        token = load_token(self["token"], self["token-file"])
        if token is not None:
            if self["rotate-token"]:
                raise ValueError(
                    "--rotate-token replaces the per-user token; it cannot be combined "
                    "with --token, --token-file or CLUSO_TOKEN"
                )
            return token, None
        path = token_path()
        return stored_token(path, rotate=bool(self["rotate-token"])), str(path)

    def _backup_settings(self) -> BackupSettings:
        budget = Budget(self["backup-max-files"], self["backup-max-bytes"])
        if self["backup-dir"] is None:
            return BackupSettings(budget=budget, keep=self["backup-keep"])
        return BackupSettings(self["backup-dir"], budget, self["backup-keep"])

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
            aliases = _aliases(factory)
            for cli, (owner, spec) in self.source_options.items():
                if owner != factory.name:
                    continue
                value = "" if spec.flag else f"={spec.default}"
                if spec.default is None:
                    value = "=VALUE"
                also = [f"--{alias}" for alias, name in aliases.items() if name == spec.name]
                shown = f" (also {', '.join(also)})" if also else ""
                lines.append(f"  {'':<{width}}       --{cli}{value}  {spec.help}{shown}")
        if not discovery.factories:
            lines.append("  (none found)")
        clashes = [
            f"--{cli} is declared by {', '.join(owner or 'the server' for owner in owners)}"
            for cli, owners in sorted(self.option_clashes.items())
        ]
        problems = [*discovery.problems, *self.option_problems, *clashes]
        if problems:
            lines.append("Problems:")
            lines.extend(f"  {problem}" for problem in problems)
        lines.append(f"Choose with --sources NAME,... ('{ALL_SOURCES}' for every one).")
        return "\n".join(lines) + "\n"


#: Who declares the server's own options, in clash reports.
_SERVER = ""


def _aliases(factory: IEventSourceFactory) -> Mapping[str, str]:
    try:
        return option_aliases(factory)
    except ValueError:
        return {}


def _source_options(
    cls: type[usage.Options], discovery: Discovery
) -> tuple[
    list[list[Any]],
    list[list[Any]],
    dict[str, tuple[str, OptionSpec]],
    dict[str, dict[str, OptionSpec | None]],
    list[str],
]:
    """
    The discovered sources' options as C{optFlags} and C{optParameters}
    under their command-line names, taking the raw text (each source
    parses its own values); names declared twice, by two sources or by a
    source and the server, keep every declaration (the first one is the
    one parsed; which source a value belongs to is decided once the running
    sources are known).
    """
    core: list[list[Any]] = []
    accumulateClassList(cls, "optParameters", core)
    accumulateClassList(cls, "optFlags", core)
    server_names = [spec[0] for spec in core]
    server_names += ["ignore", "help", "version", "allow-origin", "allow-host"]
    owners: dict[str, dict[str, OptionSpec | None]] = {
        name: {_SERVER: None} for name in server_names
    }
    taken_short = {spec[1] for spec in core if spec[1]}
    flags: list[list[Any]] = []
    parameters: list[list[Any]] = []
    offered: dict[str, tuple[str, OptionSpec]] = {}
    problems: list[str] = []
    for factory in discovery.factories:
        try:
            specs = option_specs(factory)
        except ValueError as e:
            problems.append(f"source {factory.name}: {e}")
            continue
        by_name = {spec.name: spec for spec in specs}
        for alias, name in _aliases(factory).items():
            owners.setdefault(alias, {})[factory.name] = by_name.get(name)
        for spec in specs:
            cli = spec.cli
            owners.setdefault(cli, {})[factory.name] = spec
            if len(owners[cli]) > 1:
                continue
            short = spec.short if spec.short not in taken_short else None
            if short:
                taken_short.add(short)
            default = "" if spec.default in (None, False) else f" (default: {spec.default})"
            also = [f"--{a}" for a, name in _aliases(factory).items() if name == spec.name]
            help = spec.help + (f" (also {', '.join(also)})" if also else "")
            if spec.flag:
                flags.append([cli, short, help])
            else:
                parameters.append([cli, short, None, help + default])
            offered[cli] = (factory.name, spec)
    return flags, parameters, offered, owners, problems


class _LoggingToPrivateFile(ClusoService):
    """
    The service as C{twistd cluso} runs it when twistd is to log to a file:
    its application is given an observer writing that file with mode
    C{0600} (twistd's own would be readable by every user, and the log
    holds the sign-in URL).
    """

    def __init__(self, config: ServerConfig, log_file: str) -> None:
        super().__init__(config)
        self._log_file = log_file

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, private_log_observer(self._log_file))
        super().setServiceParent(parent)


def makeService(options: Options) -> IService:
    config: ServerConfig = options["config"]
    if options["workers"] > 1:
        from twisted.internet import reactor

        from cluso_router.workers import WorkerSupervisor

        token = config.token
        return WorkerSupervisor(
            options.arguments,
            options["workers"],
            reuse_port_endpoint(reactor, options["listen"]),
            reactor,
            sign_in=(
                (lambda url: sign_in_banner(url, token, config.ui is None, config.token_store))
                if token is not None
                else None
            ),
        )
    log_file = twistd_log_file(getattr(options, "parent", None))
    service = (
        _LoggingToPrivateFile(config, log_file) if log_file is not None else ClusoService(config)
    )
    FreezeStartupHeap(service.reactor).setServiceParent(service)
    return service
