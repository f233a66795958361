"""
Static files beside the API: the browser client at C{/client/}, the
dashboard at C{/}, or instead of the dashboard a built single-page app
(C{--ui DIR}) served with the original server's rules.

Only GET and HEAD are answered; anything not found is the JSON 404 of the
rest of the site, never a directory listing.

The dashboard and the client are public (they hold no secret, and the
dashboard must load to read the token from a C{#token=} sign-in link);
every request they make needs the token. A C{--ui} app is not: it is
served to signed-in browsers only.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.static import File

from cluso_router.web.pages import DASHBOARD_CSP
from cluso_router.web.resources import Directory, NotFound, envelope, write_envelope
from cluso_router.web.site import SiteRoot

STATIC_ROOT: Final = Path(__file__).resolve().parent.parent / "static"

#: Types browsers insist on (module scripts need a JavaScript type), with a
#: charset for text; anything else falls back to L{mimetypes}.
CONTENT_TYPES: Final[Mapping[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
}


def content_type(path: Path) -> str:
    known = CONTENT_TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class StaticFile(Resource):
    """
    One file, whatever path is left below it, with a fixed content type;
    C{static.File} does the sending (ranges, C{If-Modified-Since}, HEAD).
    """

    isLeaf = True

    def __init__(
        self,
        path: Path,
        cache_control: bytes | None = b"no-cache",
        content_security_policy: bytes | None = None,
    ) -> None:
        super().__init__()
        self._path = path
        self._cache_control = cache_control
        self._content_security_policy = content_security_policy

    def render(self, request: Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return write_envelope(request, 405, envelope(error="Method not allowed; use GET, HEAD"))
        if not self._path.is_file():
            return NotFound().render(request)
        sender = File(str(self._path))
        sender.type = content_type(self._path)
        sender.encoding = None
        if self._cache_control is not None:
            request.setHeader(b"cache-control", self._cache_control)
        if self._content_security_policy is not None:
            request.setHeader(b"content-security-policy", self._content_security_policy)
        result: bytes | int = sender.render(request)
        return result


class FileSet(Directory):
    """
    The regular files directly inside C{directory}, by name, listed once at
    start-up so no request path ever reaches the file system.
    """

    def __init__(self, directory: Path, content_security_policy: bytes | None = None) -> None:
        super().__init__(
            {
                entry.name.encode("utf-8"): StaticFile(
                    entry, content_security_policy=content_security_policy
                )
                for entry in sorted(directory.iterdir())
                if entry.is_file() and not entry.name.startswith(".")
            }
        )

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        if request.postpath:
            return NotFound()
        child: Resource = super().getChildWithDefault(path, request)
        return child


class SinglePageApp(Resource):
    """
    A built front end in C{directory}, by the original server's rules:
    C{/assets/*} and C{/favicon.ico} are files (404 when missing, and never
    outside C{directory}), every other path is C{index.html}.

    Set it as the site root's C{fallback} so the named routes (C{/api/},
    C{/ws}, C{/client/}) keep their own answers.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self._directory = directory.resolve()
        index = self._directory / "index.html"
        if not index.is_file():
            raise ValueError(f"UI directory has no index.html: {self._directory}")
        self._index = StaticFile(index)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"assets":
            return self._asset(request.postpath or [])
        if path == b"favicon.ico" and not request.postpath:
            return self._asset([], b"favicon.ico")
        return self._index

    def _asset(self, segments: list[bytes], name: bytes = b"assets") -> Resource:
        parts = [name, *segments]
        if any(not part or part.startswith(b".") or b"\0" in part for part in parts):
            return NotFound()
        candidate = self._directory.joinpath(*(os.fsdecode(part) for part in parts))
        real = candidate.resolve()
        if not real.is_relative_to(self._directory) or not real.is_file():
            return NotFound()
        return StaticFile(real, cache_control=None)


def mount_static(root: SiteRoot, ui: str | None = None) -> frozenset[bytes]:
    """
    Serve the browser client at C{/client/}, and at C{/} the dashboard, or
    the single-page app in C{ui} when given. Return the first path
    segments to serve without the token.

    C{root} is the site root from L{cluso_router.web.site.build_root}.
    """
    root.putChild(b"client", FileSet(STATIC_ROOT / "client"))
    if ui is not None:
        root.fallback = SinglePageApp(Path(ui))
        return frozenset({b"client"})
    index = STATIC_ROOT / "dashboard" / "index.html"
    root.putChild(b"", StaticFile(index, content_security_policy=DASHBOARD_CSP))
    root.putChild(b"dashboard", FileSet(STATIC_ROOT / "dashboard", DASHBOARD_CSP))
    return frozenset({b"", b"client", b"dashboard"})
