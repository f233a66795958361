"""
C{twistd cluso}: command-line options and the service they build.
"""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

from .health import DEFAULT_PING_INTERVAL
from .service import DEFAULT_LISTEN, ClusoService, ServerConfig


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
    ]

    def postOptions(self) -> None:
        try:
            self["config"] = ServerConfig(
                root=self["root"] or os.getcwd(),
                listen=self["listen"],
                ping_interval=self["ping-interval"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    return ClusoService(options["config"])
