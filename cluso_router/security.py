"""
Who may talk to the server: the access token, and the Origin and Host
checks that keep web pages the developer happens to visit away from it.

One L{AccessPolicy} decides for every HTTP request and every WebSocket
handshake, so both transports refuse exactly the same things. It sees a
request only as a L{RequestView}, which the HTTP guard
(L{cluso_router.web.auth}) and the WebSocket protocol each build from
their own request objects.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from twisted.logger import Logger

from cluso_router.sessions import SessionTable

#: The environment variable a token can be given in.
TOKEN_ENV: Final = "CLUSO_TOKEN"
#: Characters a token may use: safe in a header, a cookie and a query string.
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9._~+/=-]{8,512}")
#: Methods that change nothing, so a foreign Origin on them is not refused.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
UNAUTHORIZED_MESSAGE: Final = "Unauthorized: Invalid or missing API key"
#: The WebSocket subprotocol a browser client names beside its token (the
#: server answers with it; browsers fail a handshake offering subprotocols
#: that gets none back).
CLIENT_SUBPROTOCOL: Final = "cluso.v1"
#: Prefix of the WebSocket subprotocol that carries the token,
#: percent-encoded, for browsers, which cannot set headers on a WebSocket.
TOKEN_SUBPROTOCOL_PREFIX: Final = "cluso.token."
#: Distinct refusal reasons logged (once each) before logging stops.
_MAX_LOGGED_REFUSALS: Final = 256


def generate_token() -> str:
    """
    A fresh random token (256 bits, URL-safe).
    """
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """
    Return C{token} if it is usable, else raise C{ValueError} saying why.
    """
    if not TOKEN_PATTERN.fullmatch(token):
        raise ValueError("a token must be 8 to 512 characters from A-Z a-z 0-9 . _ ~ + / = -")
    return token


def load_token(
    token: str | None = None,
    token_file: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """
    The token given on the command line, else in C{token_file}, else in
    C{$CLUSO_TOKEN}; C{None} when none is given (the server makes one up).

    @raise ValueError: when the token found is unusable or the file unreadable.
    """
    if token is not None and token_file is not None:
        raise ValueError("give either --token or --token-file, not both")
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ValueError(f"cannot read token file {token_file}: {e.strerror}") from None
    elif token is None:
        token = environ.get(TOKEN_ENV) or None
    return None if token is None else check_token(token)


def cookie_name(port: int) -> str:
    """
    The session cookie's name for a server on C{port}. Browsers send a
    host's cookies to every port on it, so each port gets its own name
    (and the cookie holds a session id, never the token).
    """
    return f"cluso-session-{port}"


def subprotocol_tokens(header: str) -> list[str]:
    """
    The tokens offered as C{cluso.token.<percent-encoded token>} in a
    C{Sec-WebSocket-Protocol} header.
    """
    return [
        unquote(offer[len(TOKEN_SUBPROTOCOL_PREFIX) :])
        for offer in (part.strip() for part in header.split(","))
        if offer.startswith(TOKEN_SUBPROTOCOL_PREFIX)
    ]


def parse_cookies(header: str) -> dict[str, str]:
    """
    The name/value pairs of a C{Cookie} header; malformed pairs are skipped.
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        if sep:
            cookies.setdefault(name.strip(), value.strip().strip('"'))
    return cookies


def split_host(value: str) -> tuple[str, int | None] | None:
    """
    The host name (lower case, IPv6 without brackets) and port of a Host
    header or an origin's authority; C{None} when it does not parse.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = value.partition(":")
    if not host:
        return None
    if not port_text:
        return host.rstrip("."), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host.rstrip("."), int(port_text)


def is_loopback_name(host: str) -> bool:
    """
    Whether C{host} (as from L{split_host}) always means this machine:
    C{localhost} or a loopback IP address. Names a DNS server could answer
    for (C{localhost.evil.example}) never are.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str:
    """
    C{origin} as C{scheme://host:port} in lower case with the port spelled
    out, the form origins are compared in.

    @raise ValueError: for C{*}, C{null}, or anything that is not an origin.
    """
    if origin.strip() in ("*", "null"):
        raise ValueError(f"{origin!r} is not an origin; list each allowed origin exactly")
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{origin!r} is not an origin like http://host:port")
    split = split_host(parts.netloc) if "@" not in parts.netloc else None
    if split is None:
        raise ValueError(f"{origin!r} is not an origin like http://host:port")
    host, port = split
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


@dataclass(frozen=True)
class RequestView:
    """
    What the policy looks at in an HTTP request or a WebSocket handshake.

    @ivar headers: header values by lower-case name.
    @ivar query_token: the C{token} query argument, if any.
    @ivar local_port: the port the request arrived on.
    @ivar websocket: whether this is a WebSocket opening handshake.
    """

    method: str
    headers: Mapping[str, str]
    query_token: str | None
    local_port: int
    websocket: bool = False


@dataclass(frozen=True)
class Refusal:
    """
    Why a request is refused: the HTTP status, a message for the client,
    and the reason it is counted under (C{host}, C{origin} or C{token}).
    """

    status: int
    message: str
    reason: str


class AccessPolicy:
    """
    The token, Origin and Host rules of one server.

    @param token: the shared secret, or C{None} when auth is explicitly off.
    @param allowed_origins: origins allowed besides the server's own
        (C{localhost}, C{127.0.0.1} and C{[::1]} on the port a request
        arrived on).
    @param allowed_hosts: Host names (or C{name:port}) allowed besides the
        loopback names.
    @param refusals: where refusals are counted, by reason.
    @param sessions: the browser sessions a session cookie may name (a
        table on the global reactor when not given).
    """

    log = Logger()

    def __init__(
        self,
        token: str | None,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
        refusals: Counter[str] | None = None,
        sessions: SessionTable | None = None,
    ) -> None:
        self._digest = None if token is None else _digest(token)
        self.sessions = sessions if sessions is not None else SessionTable()
        self.allowed_origins = frozenset(normalize_origin(o) for o in allowed_origins)
        self.allowed_hosts = frozenset(normalize_host(h) for h in allowed_hosts)
        self.refusals: Counter[str] = refusals if refusals is not None else Counter()
        self._logged: set[tuple[str, str]] = set()
        self._open = False

    @classmethod
    def insecure(cls) -> AccessPolicy:
        """
        A policy that lets everything through: no token, any Origin, any
        Host. For tests only; any web page the developer visits could use
        a server with it.
        """
        policy = cls(None)
        policy._open = True
        return policy

    @property
    def auth_required(self) -> bool:
        return self._digest is not None

    def token_matches(self, candidate: str) -> bool:
        """
        Constant-time comparison of C{candidate} with the token (both are
        hashed first, so not even the length leaks).
        """
        if self._digest is None:
            return False
        return hmac.compare_digest(_digest(candidate), self._digest)

    def host_allowed(self, host_header: str | None) -> bool:
        if self._open:
            return True
        if not host_header:
            return False
        split = split_host(host_header)
        if split is None:
            return False
        host, port = split
        if is_loopback_name(host):
            return True
        return host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts

    def origin_allowed(self, origin: str, local_port: int) -> bool:
        """
        Whether a page from C{origin} may use this server: one of its own
        origins on the port the request came in on, or an allowed one.
        """
        if self._open:
            return True
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return False
        if normalized in self.allowed_origins:
            return True
        split = split_host(normalized.split("://", 1)[1])
        assert split is not None
        host, port = split
        return is_loopback_name(host) and port == local_port

    def authenticated(self, view: RequestView) -> bool:
        """
        Whether C{view} carries the token (as C{Authorization: Bearer},
        C{X-API-Key}, the C{token} query argument, or for a WebSocket
        handshake a C{cluso.token.} subprotocol), or the cookie of a live
        browser session.
        """
        if self._digest is None:
            return True
        headers = view.headers
        candidates = []
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(credentials.strip())
        if "x-api-key" in headers:
            candidates.append(headers["x-api-key"].strip())
        if view.query_token is not None:
            candidates.append(view.query_token)
        if view.websocket and "sec-websocket-protocol" in headers:
            candidates.extend(subprotocol_tokens(headers["sec-websocket-protocol"]))
        if any(self.token_matches(c) for c in candidates):
            return True
        if "cookie" in headers:
            session = parse_cookies(headers["cookie"]).get(cookie_name(view.local_port))
            return session is not None and self.sessions.valid(session)
        return False

    def check(
        self, view: RequestView, public: bool = False, strict_origin: bool = False
    ) -> Refusal | None:
        """
        Refuse C{view}, or return C{None} to let it through.

        Host first (DNS rebinding), then Origin for handshakes and
        state-changing methods (for every method with C{strict_origin}, as
        the MCP endpoint's spec requires), then the token. A missing Origin (a
        non-browser client) passes the Origin check; it still needs the
        token unless auth is off. Preflights (C{OPTIONS}) never carry
        credentials, so they are not asked for the token, and neither are
        C{public} resources.
        """
        host = view.headers.get("host")
        if not self.host_allowed(host):
            return self.refuse(Refusal(403, host_refused_message(host), "host"), host or "")
        origin = view.headers.get("origin")
        if (
            origin is not None
            and (strict_origin or view.websocket or view.method not in SAFE_METHODS)
            and not self.origin_allowed(origin, view.local_port)
        ):
            return self.refuse(
                Refusal(403, f"Forbidden: origin {origin!r} is not allowed", "origin"), origin
            )
        if public or (view.method == "OPTIONS" and not view.websocket):
            return None
        if not self.authenticated(view):
            return self.refuse(Refusal(401, UNAUTHORIZED_MESSAGE, "token"), "")
        return None

    def refuse(self, refusal: Refusal, detail: str) -> Refusal:
        """
        Count C{refusal} and log the first of its kind (C{detail}: the
        offending origin or host).
        """
        self.refusals[refusal.reason] += 1
        key = (refusal.reason, detail)
        if key not in self._logged and len(self._logged) < _MAX_LOGGED_REFUSALS:
            self._logged.add(key)
            self.log.info(
                "Refused a request ({status}): {message}; later refusals like it are only counted",
                status=refusal.status,
                message=refusal.message,
            )
        return refusal


def host_refused_message(host: str | None) -> str:
    """
    Why a request with Host C{host} is refused, and the option that would
    let it in.
    """
    split = split_host(host) if host else None
    if split is None:
        return f"Forbidden: host {host!r} is not allowed"
    name = split[0] if ":" not in split[0] else f"[{split[0]}]"
    return (
        f"Forbidden: host {host!r} is not allowed. If you reach this server by that name "
        f"on purpose (a devbox, a port forward, a proxy), start it with --allow-host {name}"
    )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def normalize_host(value: str) -> str:
    """
    An allowed-host value as compared with Host headers: C{name} or
    C{name:port}, lower case.

    @raise ValueError: when C{value} is not a host name or C{host:port}.
    """
    if "*" in value:
        raise ValueError(f"{value!r}: wildcards are not accepted; list each host name")
    split = split_host(value)
    if split is None:
        raise ValueError(f"{value!r} is not a host name or host:port")
    host, port = split
    return host if port is None else f"{host}:{port}"


def endpoint_is_loopback(description: str) -> bool | None:
    """
    Whether a server endpoint string listens on loopback only: C{True} for
    TCP on a loopback interface and for UNIX sockets, C{False} for TCP on
    any other (or every) interface, C{None} for kinds it cannot tell.
    """
    kind, *arguments = re.split(r"(?<!\\):", description)
    kind = kind.strip().lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    for argument in arguments:
        name, sep, value = argument.partition("=")
        if sep and name == "interface":
            return is_loopback_address(value.replace("\\:", ":"))
    return False


def is_loopback_address(host: str) -> bool:
    """
    Whether a listening address (C{IPv4Address.host}) is reachable from this
    machine only.
    """
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
