"""
C{GET /api/health}: is this node up, and how busy is it.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from cluso_router.interfaces import IBackplane
from cluso_router.router.router import Router
from cluso_router.web.resources import JsonEndpoint


def health_resource(router: Router, backplane: IBackplane | None = None) -> JsonEndpoint:
    """
    C{status} is C{degraded} while the backplane cannot reach the other
    nodes (local clients are served, events do not cross nodes) or while
    a part of the server does not work (C{problems}: an event source that
    failed to start, with why).
    C{connections} counts every session; C{sessions} splits them by dialect
    (C{json}, C{wamp}, C{mcp}).
    """
    plane: IBackplane = backplane if backplane is not None else router

    def health(request: Request) -> dict[str, Any]:
        degraded = plane.backplane_status != "ok" or router.problems
        return {
            "status": "degraded" if degraded else "ok",
            "problems": dict(sorted(router.problems.items())),
            "connections": router.connection_count,
            "sessions": dict(sorted(router.dialects.items())),
            "channels": dict(router.subscriber_counts()),
            "uptimeSeconds": round(router.uptime, 3),
        }

    return JsonEndpoint({b"GET": health})
