"""
The access policy in front of every HTTP route (and the WebSocket
upgrade, which arrives as an HTTP request first).

L{AuthGuard} wraps the site's root resource, so no route can forget the
check. It also answers CORS preflights, sets CORS headers for allowed
origins only, and trades a C{?token=} in a page URL for an C{HttpOnly},
C{SameSite=Strict} cookie, redirecting to the same URL without it so the
token leaves the address bar and the browser history.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from cluso_router.security import AccessPolicy, Refusal, RequestView, cookie_name
from cluso_router.web.resources import envelope, write_envelope

ALLOWED_METHODS: Final = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS: Final = (
    b"Content-Type, Authorization, X-API-Key, X-Requested-With, "
    b"Mcp-Session-Id, Mcp-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID"
)
#: Response headers a page of an allowed origin may read (an MCP client's session).
EXPOSED_HEADERS: Final = b"Mcp-Session-Id"
_TOKEN_IN_TEXT: Final = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)


def request_view(request: Request) -> RequestView:
    """
    What the policy needs from a twisted.web request.
    """
    headers: dict[str, str] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        separator = "; " if key == "cookie" else ", "
        headers[key] = separator.join(v.decode("latin-1") for v in values)
    host = request.getHost()
    return RequestView(
        method=request.method.decode("latin-1").upper(),
        headers=headers,
        query_token=query_token(request.uri),
        local_port=getattr(host, "port", 0),
        websocket=headers.get("upgrade", "").lower() == "websocket",
    )


def query_token(uri: bytes) -> str | None:
    query = urlsplit(uri.decode("latin-1")).query
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return value
    return None


def without_token(uri: bytes) -> bytes:
    """
    C{uri} with any C{token} query argument removed.
    """
    parts = urlsplit(uri.decode("latin-1"))
    query = [(n, v) for n, v in parse_qsl(parts.query, keep_blank_values=True) if n != "token"]
    return urlunsplit(parts._replace(query=urlencode(query))).encode("latin-1")


def redact(text: str) -> str:
    """
    C{text} with the value of every C{token=} replaced.
    """
    return _TOKEN_IN_TEXT.sub(r"\1[redacted]", text)


def redacting_log_formatter(timestamp: str, request: Request) -> str:
    """
    The combined access-log line, minus any token in the URL or referrer.
    """
    return redact(combinedLogFormatter(timestamp, request))


class _Answer(Resource):
    """
    A fixed answer decided by the guard, whatever the path below.
    """

    isLeaf = True

    def __init__(self, status: int, message: str) -> None:
        super().__init__()
        self._status = status
        self._message = message

    def render(self, request: Request) -> bytes:
        if self._status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="cluso"')
        return write_envelope(request, self._status, envelope(error=self._message))


class _TokenRedirect(Resource):
    """
    Set the auth cookie and send the browser to the URL without the token.
    """

    isLeaf = True

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def render(self, request: Request) -> bytes:
        host = request.getHost()
        request.addCookie(
            cookie_name(getattr(host, "port", 0)),
            self._token,
            path="/",
            httpOnly=True,
            sameSite="strict",
            secure=request.isSecure() or None,
        )
        request.setResponseCode(302)
        request.setHeader(b"location", without_token(request.uri) or b"/")
        request.setHeader(b"cache-control", b"no-store")
        return b""


class AuthGuard(Resource):
    """
    Applies C{policy} to every request before handing it to C{wrapped}.

    @param public_paths: first path segments (such as C{b"metrics"}) served
        without the token; the Host and Origin checks still apply.
    @param handshake_paths: first path segments of WebSocket endpoints that
        check the token at the handshake themselves, with the same policy.
        Handshakes there that ask for a subprotocol are left to the
        endpoint, so a dialect with its own authentication (WAMP's ticket)
        can do without the token; the guard still checks Host and Origin.
    @param strict_origin_paths: first path segments where a foreign Origin
        is refused whatever the method (the MCP endpoint: its event stream
        is a C{GET}).
    """

    def __init__(
        self,
        wrapped: IResource,
        policy: AccessPolicy,
        public_paths: Collection[bytes] = (),
        handshake_paths: Collection[bytes] = (),
        strict_origin_paths: Collection[bytes] = (),
    ) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.policy = policy
        self.public_paths = frozenset(public_paths)
        self.handshake_paths = frozenset(handshake_paths)
        self.strict_origin_paths = frozenset(strict_origin_paths)

    def putChild(self, path: bytes, child: IResource) -> None:
        self.wrapped.putChild(path, child)

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        answer = self._admit(path, request)
        if answer is not None:
            return answer
        child: IResource = self.wrapped.getChildWithDefault(path, request)
        return child

    def render(self, request: Request) -> bytes | int:
        answer = self._admit(b"", request)
        if answer is not None:
            return answer.render(request)  # type: ignore[no-any-return]
        return self.wrapped.render(request)  # type: ignore[no-any-return]

    def _admit(self, path: bytes, request: Request) -> Resource | None:
        view = request_view(request)
        origin = view.headers.get("origin")
        allowed_origin = origin is not None and self.policy.origin_allowed(origin, view.local_port)
        if origin is not None:
            request.setHeader(b"vary", b"Origin")
        if allowed_origin:
            assert origin is not None
            request.setHeader(b"access-control-allow-origin", origin.encode("latin-1"))
            request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(b"access-control-expose-headers", EXPOSED_HEADERS)
        refusal = self.policy.check(
            view,
            public=path in self.public_paths
            or (
                view.websocket
                and path in self.handshake_paths
                and "sec-websocket-protocol" in view.headers
            ),
            strict_origin=path in self.strict_origin_paths,
        )
        if refusal is not None:
            return _refused(refusal)
        if view.method == "OPTIONS" and not view.websocket:
            return self._preflight(origin, allowed_origin)
        token = view.query_token
        if token is not None and not view.websocket and self.policy.token_matches(token):
            if view.method in ("GET", "HEAD"):
                return _TokenRedirect(token)
            request.uri = without_token(request.uri)
        return None

    def _preflight(self, origin: str | None, allowed: bool) -> Resource:
        if origin is not None and not allowed:
            return _refused(
                self.policy.refuse(
                    Refusal(403, f"Forbidden: origin {origin!r} is not allowed", "origin"), origin
                )
            )
        return _Preflight()


class _Preflight(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", ALLOWED_METHODS)
        request.setHeader(b"access-control-allow-headers", ALLOWED_HEADERS)
        request.setHeader(b"access-control-max-age", b"86400")
        return b""


def _refused(refusal: Refusal) -> Resource:
    return _Answer(refusal.status, refusal.message)
