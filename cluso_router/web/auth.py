"""
The access policy in front of every HTTP route (and the WebSocket
upgrade, which arrives as an HTTP request first).

L{AuthGuard} wraps the site's root resource, so no route can forget the
check. It also answers CORS preflights, sets CORS headers for allowed
origins only, sets the headers every answer carries (L{SECURITY_HEADERS}),
and trades a C{?token=} in a page URL for an C{HttpOnly},
C{SameSite=Strict} cookie holding a new browser session id, redirecting
to the same path without the token so it leaves the address bar and the
browser history.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final
from urllib.parse import parse_qsl, quote_from_bytes, unquote_plus

from twisted.web.http import combinedLogFormatter
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from cluso_router.security import (
    UNAUTHORIZED_MESSAGE,
    AccessPolicy,
    Refusal,
    RequestView,
    cookie_name,
)
from cluso_router.sessions import SessionTable
from cluso_router.web.pages import (
    SECURITY_HEADERS,
    host_refused_page,
    sign_in_page,
    wants_html,
    write_page,
)
from cluso_router.web.resources import envelope, write_envelope

ALLOWED_METHODS: Final = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS: Final = (
    b"Content-Type, Authorization, X-API-Key, X-Requested-With, "
    b"Mcp-Session-Id, Mcp-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID"
)
#: Response headers a page of an allowed origin may read (an MCP client's session).
EXPOSED_HEADERS: Final = b"Mcp-Session-Id"
#: A C{name=value} pair anywhere in a log line (URL, query, Referer).
_ARGUMENT: Final = re.compile(r"(?P<name>[^\s\"'?&;=/]+)=(?P<value>[^\s\"'&;#]*)")
#: Characters left as they are in a redirect's path and query.
_PATH_SAFE: Final = "/%:@!$&'()*+,;="
_QUERY_SAFE: Final = _PATH_SAFE + "?"


def request_view(request: Request) -> RequestView:
    """
    What the policy needs from a twisted.web request.
    """
    host = request.getHost()
    return head_view(request.method, request.uri, request.requestHeaders, getattr(host, "port", 0))


def head_view(method: bytes, uri: bytes, headers: Headers, local_port: int) -> RequestView:
    """
    What the policy needs from a request's head (its request line and
    headers), which is all there is before the body is read.
    """
    values: dict[str, str] = {}
    for name, raw in headers.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        separator = "; " if key == "cookie" else ", "
        values[key] = separator.join(v.decode("latin-1") for v in raw)
    return RequestView(
        method=method.decode("latin-1").upper(),
        headers=values,
        query_token=query_token(uri),
        local_port=local_port,
        websocket=values.get("upgrade", "").lower() == "websocket",
    )


def query_token(uri: bytes) -> str | None:
    """
    The C{token} query argument of C{uri}. Names are compared decoded, as
    URLs define them (C{%74oken} is C{token}); so are they when redacted.
    """
    query = uri.decode("latin-1").partition("?")[2]
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return value
    return None


def _without_token_arguments(query: str) -> str:
    kept = (part for part in query.split("&") if part)
    return "&".join(part for part in kept if unquote_plus(part.partition("=")[0]) != "token")


def without_token(uri: bytes) -> bytes:
    """
    C{uri} with every C{token} query argument removed, the others as they were.
    """
    path, _, query = uri.decode("latin-1").partition("?")
    query = _without_token_arguments(query)
    return (path + ("?" + query if query else "")).encode("latin-1")


def same_origin_location(uri: bytes) -> bytes:
    """
    Where to send a browser after its sign-in at C{uri}: the same path and
    query without the token, as a path on this server and nothing else
    (C{//evil.example/x} must not become a link to another host, nor may
    an absolute-form request URI).
    """
    path, _, query = uri.partition(b"?")
    if not path.startswith(b"/"):
        path = b"/"
    location = "/" + quote_from_bytes(path, safe=_PATH_SAFE).lstrip("/")
    query_text = _without_token_arguments(quote_from_bytes(query, safe=_QUERY_SAFE))
    return (location + ("?" + query_text if query_text else "")).encode("ascii")


def redact(text: str) -> str:
    """
    C{text} with the value of every C{token} argument replaced, whatever
    the case or percent-encoding of its name.
    """

    def hide(match: re.Match[str]) -> str:
        if unquote_plus(match["name"]).strip().lower() == "token":
            return f"{match['name']}=[redacted]"
        return match[0]

    return _ARGUMENT.sub(hide, text)


def redacting_log_formatter(timestamp: str, request: Request) -> str:
    """
    The combined access-log line, minus any token in the URL or referrer.
    """
    return redact(combinedLogFormatter(timestamp, request))


class _Answer(Resource):
    """
    A refusal decided by the guard, whatever the path below: the JSON
    envelope, or for a browser loading a page a short page saying what to
    do.
    """

    isLeaf = True

    def __init__(self, refusal: Refusal) -> None:
        super().__init__()
        self._refusal = refusal

    def render(self, request: Request) -> bytes:
        refusal = self._refusal
        if refusal.status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="cluso"')
        if wants_html(request):
            if refusal.reason == "token":
                return write_page(request, refusal.status, sign_in_page())
            if refusal.reason == "host":
                host = request.getHeader(b"host")
                host_text = None if host is None else host.decode("latin-1")
                return write_page(
                    request, refusal.status, host_refused_page(host_text, refusal.message)
                )
        return write_envelope(request, refusal.status, envelope(error=refusal.message))


class _SignIn(Resource):
    """
    Open a browser session, set its cookie, and send the browser to the
    same path without the token.
    """

    isLeaf = True

    def __init__(self, sessions: SessionTable) -> None:
        super().__init__()
        self._sessions = sessions

    def render(self, request: Request) -> bytes:
        host = request.getHost()
        request.addCookie(
            cookie_name(getattr(host, "port", 0)),
            self._sessions.open(),
            path="/",
            max_age=str(int(self._sessions.lifetime)),
            httpOnly=True,
            sameSite="strict",
            secure=request.isSecure() or None,
        )
        request.setResponseCode(302)
        request.setHeader(b"location", same_origin_location(request.uri))
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
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
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
        public_page = path in self.public_paths and not view.websocket
        refusal = self.policy.check(
            view,
            public=public_page
            or (
                view.websocket
                and path in self.handshake_paths
                and "sec-websocket-protocol" in view.headers
            ),
            strict_origin=path in self.strict_origin_paths,
        )
        token = view.query_token
        matches = token is not None and self.policy.token_matches(token)
        wrong_link = public_page and token is not None and not matches
        if refusal is None and wrong_link and self.policy.auth_required:
            # A public page opened with a wrong sign-in link says so.
            refusal = self.policy.refuse(Refusal(401, UNAUTHORIZED_MESSAGE, "token"), "")
        if refusal is not None:
            return _Answer(refusal)
        if view.method == "OPTIONS" and not view.websocket:
            return self._preflight(origin, allowed_origin)
        if matches and not view.websocket:
            if view.method in ("GET", "HEAD"):
                return _SignIn(self.policy.sessions)
            request.uri = without_token(request.uri)
        return None

    def _preflight(self, origin: str | None, allowed: bool) -> Resource:
        if origin is not None and not allowed:
            return _Answer(
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
