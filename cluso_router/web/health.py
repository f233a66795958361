"""
C{GET /api/health}: is this node up, and how busy is it.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from ..router import Router
from ._json import JsonEndpoint


def health_resource(router: Router) -> JsonEndpoint:
    def health(request: Request) -> dict[str, Any]:
        return {
            "status": "ok",
            "connections": router.connection_count,
            "channels": dict(router.subscriber_counts()),
            "uptimeSeconds": round(router.uptime, 3),
        }

    return JsonEndpoint({b"GET": health})
