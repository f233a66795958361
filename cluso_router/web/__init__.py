"""
The HTTP side of the router: JSON API resources and the site that serves
them beside the WebSocket endpoint.
"""

from cluso_router.web.resources import (
    ApiError,
    Directory,
    JsonEndpoint,
    NotFound,
    envelope,
    read_json,
)
from cluso_router.web.site import build_root, build_site

__all__ = [
    "ApiError",
    "Directory",
    "JsonEndpoint",
    "NotFound",
    "build_root",
    "build_site",
    "envelope",
    "read_json",
]
