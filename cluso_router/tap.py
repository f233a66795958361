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

from .health import DEFAULT_PING_INTERVAL
from .service import DEFAULT_LISTEN, ClusoService, ServerConfig
from .sources import (
    ALL_SOURCES,
    Discovery,
    SourceOption,
    UnknownSource,
    discover_sources,
    source_options,
)
from .web.bodylimit import DEFAULT_MAX_BODY


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
    optFlags = [["list-sources", None, "Print the event sources found, then exit."]]

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

    def opt_ignore(self, pattern: str) -> None:
        """
        Leave out paths matching this .gitignore-style pattern (repeatable).
        """
        self["ignore"].append(pattern)

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
