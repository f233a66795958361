"""
Token auth, Origin and Host checks against the real server (C{twistd -n
cluso} in a child process, plain sockets and C{http.client}): what a web
page the developer happens to visit can and cannot do to it.
"""

from __future__ import annotations

import base64
import http.client as httplib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import ChildServer, python_tool, start_twistd, stop_child_server

TOKEN = "sec-test-token-9f8e7d6c5b4a"
ALLOWED_ORIGIN = "http://dev.example:5173"
ALLOWED_HOST = "dev.example"


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    """
    The server as users start it, with the token from C{CLUSO_TOKEN}, one
    extra allowed origin and one extra allowed Host name.
    """
    root = tmp_path_factory.mktemp("root")
    os.environ["CLUSO_TOKEN"] = TOKEN
    try:
        server = start_twistd(
            root,
            "--sources",
            "",
            "--allow-origin",
            ALLOWED_ORIGIN,
            "--allow-host",
            ALLOWED_HOST,
            auth=True,
        )
    finally:
        del os.environ["CLUSO_TOKEN"]
    yield server
    stop_child_server(server)


def http(
    child: ChildServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """
    One request; the status, the headers (lower-case names; repeated ones
    joined with newlines) and the body.
    """
    connection = httplib.HTTPConnection("127.0.0.1", child.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        received: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            received[key] = f"{received[key]}\n{value}" if key in received else value
        return response.status, received, response.read()
    finally:
        connection.close()


def handshake(child: ChildServer, headers: dict[str, str], path: str = "/ws") -> int:
    """
    The HTTP status a WebSocket opening handshake with C{headers} gets.
    """
    return int(handshake_head(child, headers, path).split(b" ", 2)[1])


def handshake_head(child: ChildServer, headers: dict[str, str], path: str = "/ws") -> bytes:
    """
    The head of the answer to a WebSocket opening handshake with C{headers}.
    """
    port = child.port
    lines = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall((request + "\r\n").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.partition(b"\r\n\r\n")[0]


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "http://1.2.3.4",
        "null",
        "http://localhost:1",
        "https://dev.example:5173",
    ],
)
def test_cross_origin_handshake_is_refused(child: ChildServer, origin: str) -> None:
    """
    A WebSocket handshake from any origin but the server's own and the
    allowed ones gets 403, even with a valid token: a page elsewhere cannot
    hijack the socket with the developer's cookie.
    """
    assert handshake(child, {"Origin": origin, **bearer()}) == 403
    assert handshake(child, {"Origin": origin, "Cookie": sign_in(child)}) == 403


def sign_in(child: ChildServer, token: str = TOKEN) -> str:
    """
    Sign in as a browser does, with C{?token=}; the C{Cookie} header value
    the browser then sends.
    """
    status, received, _ = http(child, "GET", f"/?token={token}")
    assert status == 302
    return received["set-cookie"].split(";", 1)[0]


def test_own_and_allowed_origins_are_accepted(child: ChildServer) -> None:
    """
    The server's own origins (localhost, 127.0.0.1 and [::1] on its port)
    and each --allow-origin may open the socket.
    """
    port = child.port
    for origin in (
        f"http://localhost:{port}",
        f"http://127.0.0.1:{port}",
        f"http://[::1]:{port}",
        ALLOWED_ORIGIN,
    ):
        assert handshake(child, {"Origin": origin, **bearer()}) == 101, origin


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/ws"), ("GET", "/api/health"), ("POST", "/api/events/x"), ("GET", "/metrics")],
)
def test_foreign_host_is_refused(child: ChildServer, method: str, path: str) -> None:
    """
    A Host header that is not a loopback name nor an --allow-host value
    gets 403 on every route (DNS rebinding), even with the token.
    """
    headers = {"Host": "attacker.example:3000", **bearer()}
    if path == "/ws":
        assert handshake(child, headers) == 403
        return
    status, _, body = http(child, method, path, headers, b"{}")
    assert status == 403
    assert json.loads(body)["success"] is False


def test_foreign_host_is_told_which_option_admits_it(child: ChildServer) -> None:
    """
    A request for a host name the server does not answer to (a devbox, a
    port forward) is told to start the server with C{--allow-host NAME}:
    in the JSON envelope for API clients, in a short page (no script) for
    a browser; the name is escaped in the page.
    """
    host = "devbox.local:3000"
    status, received, body = http(child, "GET", "/api/health", {"Host": host, **bearer()})
    assert status == 403
    assert received["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert "devbox.local:3000" in error
    assert "--allow-host devbox.local" in error

    page = {"Host": "<b>x</b>.local", "Accept": "text/html,application/xhtml+xml"}
    status, received, body = http(child, "GET", "/", page)
    assert status == 403
    assert received["content-type"] == "text/html; charset=utf-8"
    text = body.decode()
    assert "--allow-host" in text
    assert "&lt;b&gt;x&lt;/b&gt;.local" in text
    assert "<b>x</b>" not in text
    assert "<script" not in text
    assert "script-src" not in received["content-security-policy"]
    assert received["content-security-policy"].startswith("default-src 'none'")


def test_allowed_and_loopback_hosts_pass(child: ChildServer) -> None:
    """
    C{localhost}, loopback addresses and --allow-host names pass the Host check.
    """
    for host in ("localhost:1234", "127.0.0.1", "[::1]:80", "dev.example", "DEV.EXAMPLE:8080"):
        status, _, _ = http(child, "GET", "/api/health", {"Host": host, **bearer()})
        assert status == 200, host


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token-123"), {"X-API-Key": "nope-nope-nope"}, {"Authorization": TOKEN}],
    ids=["none", "wrong-bearer", "wrong-key", "no-scheme"],
)
def test_missing_or_wrong_token_is_refused(child: ChildServer, headers: dict[str, str]) -> None:
    """
    Without the right token: 401 with the JSON envelope on HTTP, and a
    handshake refused with 401.
    """
    status, received, body = http(child, "GET", "/api/health", headers)
    assert status == 401
    assert json.loads(body)["error"] == "Unauthorized: Invalid or missing API key"
    assert received["www-authenticate"].startswith("Bearer")
    assert handshake(child, headers) == 401


@pytest.mark.parametrize(
    "how", ["bearer", "x-api-key", "session", "query", "subprotocol"], ids=lambda how: str(how)
)
def test_token_is_accepted_in_each_form(child: ChildServer, how: str) -> None:
    """
    The token works as C{Authorization: Bearer}, as the original server's
    C{X-API-Key}, in the handshake's query string and, for browsers, in a
    C{cluso.token.} WebSocket subprotocol; the session cookie a sign-in
    sets works too.
    """
    headers = {
        "bearer": bearer(),
        "x-api-key": {"X-API-Key": TOKEN},
        "session": {"Cookie": f"other=1; {sign_in(child)}"},
        "query": {},
        "subprotocol": {"Sec-WebSocket-Protocol": f"cluso.v1, cluso.token.{TOKEN}"},
    }[how]
    path = "/ws?token=" + TOKEN if how == "query" else "/ws"
    assert handshake(child, headers, path) == 101
    if how not in ("query", "subprotocol"):
        status, _, body = http(child, "GET", "/api/health", headers)
        assert status == 200
        assert json.loads(body)["data"]["status"] == "ok"


def test_token_subprotocol_is_answered_with_the_client_subprotocol(child: ChildServer) -> None:
    """
    A browser's handshake offering C{cluso.v1} and its token as a
    subprotocol is answered C{cluso.v1}, never with the token; a wrong
    token there is refused like any other; WAMP still gets C{wamp.2.json}.
    """
    head = handshake_head(child, {"Sec-WebSocket-Protocol": f"cluso.v1, cluso.token.{TOKEN}"})
    assert head.startswith(b"HTTP/1.1 101")
    answered = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-protocol:")
    ]
    assert answered == [b"cluso.v1"]
    assert TOKEN.encode() not in head
    wrong = {"Sec-WebSocket-Protocol": "cluso.v1, cluso.token.wrong-token-1234"}
    assert handshake(child, wrong) == 401
    wamp = handshake_head(child, {"Sec-WebSocket-Protocol": "wamp.2.json"})
    assert b"wamp.2.json" in wamp


def test_cookie_of_another_port_is_not_accepted(child: ChildServer) -> None:
    """
    Each port has its own cookie name: a session cookie from a server on
    another port of the same host does not authenticate here.
    """
    session = sign_in(child).split("=", 1)[1]
    headers = {"Cookie": f"cluso-session-{child.port + 1}={session}"}
    assert http(child, "GET", "/api/health", headers)[0] == 401


def test_token_in_page_url_becomes_a_session_cookie(child: ChildServer) -> None:
    """
    Opening a page with C{?token=} sets an C{HttpOnly; SameSite=Strict}
    cookie holding a new session id (never the token), expiring, and
    redirects to the same URL without the token; the cookie then opens the
    API and the WebSocket. A made-up session id and a wrong token open
    nothing and set nothing.
    """
    status, received, _ = http(child, "GET", f"/api/health?x=1&token={TOKEN}&y=2")
    assert status == 302
    assert received["location"] == "/api/health?x=1&y=2"
    set_cookie = received["set-cookie"]
    name, _, value = set_cookie.split(";", 1)[0].partition("=")
    assert name == f"cluso-session-{child.port}"
    assert TOKEN not in set_cookie
    assert len(value) >= 32
    assert "HttpOnly" in set_cookie
    assert "samesite=strict" in set_cookie.lower()
    assert "Path=/" in set_cookie
    assert "Max-Age=43200" in set_cookie
    jar = {"Cookie": set_cookie.split(";", 1)[0]}
    assert http(child, "GET", received["location"], jar)[0] == 200
    assert handshake(child, {**jar, "Origin": f"http://127.0.0.1:{child.port}"}) == 101
    assert sign_in(child) != jar["Cookie"]

    forged = {"Cookie": f"cluso-session-{child.port}={TOKEN}"}
    assert http(child, "GET", "/api/health", forged)[0] == 401
    status, received, _ = http(child, "GET", "/?token=wrong-token-456")
    assert status == 401
    assert "set-cookie" not in received


def test_a_browser_without_credentials_gets_a_sign_in_page(child: ChildServer) -> None:
    """
    A browser loading a page without credentials gets a small HTML page
    (401) that says where to find the sign-in address, holding no script
    and no secret; API clients keep getting the JSON 401. The dashboard
    itself, holding no secret either, loads without credentials and asks
    for them itself.
    """
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    status, received, body = http(child, "GET", "/api/health", browser)
    assert status == 401
    assert received["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert "#token=" in page
    assert "cluso-router/token" in page
    assert "<script" not in page
    assert TOKEN not in page
    status, received, body = http(child, "GET", "/api/health", {"Accept": "*/*"})
    assert status == 401
    assert json.loads(body)["error"] == "Unauthorized: Invalid or missing API key"
    for path in ("/", "/dashboard/dashboard.js", "/client/cluso-client.js"):
        status, _, body = http(child, "GET", path, browser)
        assert status == 200, path
        assert TOKEN.encode() not in body


def test_dashboard_is_served_with_a_strict_content_security_policy(child: ChildServer) -> None:
    """
    The dashboard page may run only its own scripts and styles and connect
    only to its own server, may not be framed, sniffed or leak its URL as
    a referrer; and it has no inline script or style the policy would
    block. Every answer of the server refuses framing and sniffing.
    """
    status, received, body = http(child, "GET", "/")
    assert status == 200
    policy = dict(
        part.strip().split(" ", 1) for part in received["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert received["x-frame-options"] == "DENY"
    assert received["x-content-type-options"] == "nosniff"
    assert received["referrer-policy"] == "no-referrer"
    page = body.decode()
    assert re.findall(r"<script[^>]*>", page) == [
        '<script type="module" src="dashboard/dashboard.js">'
    ]
    assert "<style" not in page
    assert " style=" not in page
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page)
    status, received, _ = http(child, "GET", "/api/health", bearer())
    assert received["x-frame-options"] == "DENY"
    assert received["x-content-type-options"] == "nosniff"
    assert received["content-security-policy"] == "frame-ancestors 'none'"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//evil.example/x", "/evil.example/x"),
        ("///evil.example", "/evil.example"),
        ("/\\evil.example/x", "/%5Cevil.example/x"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
    ],
)
def test_sign_in_redirects_only_to_a_path_on_this_server(
    child: ChildServer, target: str, location: str
) -> None:
    """
    Whatever the path of a sign-in URL, the redirect goes to a path of
    this server: never to a protocol-relative or absolute URL a browser
    would take to another host.
    """
    status, received, _ = http(child, "GET", f"{target}?token={TOKEN}")
    assert status == 302
    assert received["location"] == location


def test_state_changing_request_from_foreign_origin_is_refused(child: ChildServer) -> None:
    """
    A POST from another origin gets 403 even with the cookie (CSRF); from
    an allowed origin it goes through. A GET from another origin is served
    but carries no CORS header, so the page cannot read it.
    """
    body = b'{"n": 1}'
    session = sign_in(child)
    evil = {"Origin": "http://evil.example", "Cookie": session}
    assert http(child, "POST", "/api/events/demo", evil, body)[0] == 403
    allowed = {"Origin": ALLOWED_ORIGIN, "Cookie": session}
    assert http(child, "POST", "/api/events/demo", allowed, body)[0] == 200
    status, received, _ = http(child, "GET", "/api/health", evil)
    assert status == 200
    assert "access-control-allow-origin" not in received


def test_cors_reflects_only_allowed_origins(child: ChildServer) -> None:
    """
    Allowed origins get their origin echoed with credentials allowed, and
    preflights answered; other origins get neither, and their preflight 403.
    """
    status, received, _ = http(child, "GET", "/api/health", {"Origin": ALLOWED_ORIGIN, **bearer()})
    assert status == 200
    assert received["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert received["access-control-allow-credentials"] == "true"
    assert "Origin" in received["vary"]

    preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
    status, received, _ = http(child, "OPTIONS", "/api/events/demo", preflight)
    assert status == 204
    assert received["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in received["access-control-allow-methods"]
    assert "Authorization" in received["access-control-allow-headers"]

    status, received, _ = http(
        child, "OPTIONS", "/api/events/demo", {"Origin": "http://evil.example"}
    )
    assert status == 403
    assert "access-control-allow-origin" not in received


def run_cluso(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python_tool("twistd"), "--pidfile=", "-n", "cluso", "--sources", "", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "CLUSO_TOKEN"},
    )


def test_auth_none_refuses_to_start_on_a_non_loopback_address(tmp_path: Path) -> None:
    """
    C{--auth none} listening on every interface refuses to start, saying
    why; the same on loopback starts (as the shared fixtures show).
    """
    result = run_cluso(["--auth", "none", "--listen", "tcp:0"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "--auth none is refused on tcp:0" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow-origin", "*"], "is not an origin"),
        (["--allow-origin", "http://x.example/path"], "is not an origin"),
        (["--allow-host", "*.example"], "wildcards are not accepted"),
        (["--token", "short"], "a token must be"),
        (["--auth", "maybe"], "auth must be"),
        (["--token", "a-valid-token-1", "--token-file", "/nonexistent"], "either --token"),
    ],
)
def test_unsafe_or_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    """
    Wildcard origins and hosts, short tokens and contradictory token
    options are usage errors.
    """
    result = run_cluso(["--listen", "tcp:0:interface=127.0.0.1", *args], tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_token_is_logged_once_inside_the_url_to_open(tmp_path: Path) -> None:
    """
    The start log shows the token once, in a ready-to-open URL inside a
    block of its own; requests carrying it in headers, cookies or query
    strings (redirected, refused or upgraded, its name percent-encoded or
    not) never put it in the log again.
    """
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    root = tmp_path / "root"
    root.mkdir()
    server = start_twistd(root, "--sources", "", "--token-file", str(token_file), auth=True)
    try:
        assert server.token == TOKEN
        started = "".join(server.log)
        assert f"{server.url}#token={TOKEN}" in started
        assert "=" * 72 in started
        assert "To sign in from a browser, open:" in started
        http(server, "GET", f"/?token={TOKEN}")
        http(server, "GET", f"/?%74oken={TOKEN}")
        http(server, "GET", f"/api/health?x=1&%74%6F%6B%65%6E={TOKEN}")
        http(server, "GET", "/api/health", {"Referer": f"{server.url}?token={TOKEN}"})
        http(server, "GET", "/api/health", {"Referer": f"{server.url}?t%6Fken={TOKEN}"})
        http(server, "POST", f"/api/events/x?token={TOKEN}", {}, b"{}")
        http(server, "POST", f"/api/events/x?%74oken={TOKEN}", {}, b"{}")
        http(server, "POST", "/api/events/x?token=not-the-token", {}, b"{}")
        http(server, "GET", "/api/health", bearer())
        http(server, "GET", "/api/health", {"X-API-Key": TOKEN, "Origin": "http://evil.example"})
        assert handshake(server, {}, f"/ws?token={TOKEN}") == 101
        assert handshake(server, {"Origin": "http://evil.example"}, f"/ws?token={TOKEN}") == 403
    finally:
        stop_child_server(server)
    log = "".join(server.log)
    assert log.count(TOKEN) == 1, log
    assert "?token=[redacted]" in log
    assert "?%74oken=[redacted]" in log
    assert "&%74%6F%6B%65%6E=[redacted]" in log


def test_handshake_checks_apply_to_an_embedded_endpoint(tmp_path: Path) -> None:
    """
    The WebSocket endpoint enforces the same policy on its own, for sites
    that embed it without the HTTP guard.
    """
    script = f"""
import sys
from twisted.internet import reactor
from twisted.web.server import Site
from cluso_router import Router, websocket_resource
from cluso_router.security import AccessPolicy
port = reactor.listenTCP(0, Site(websocket_resource(Router(), policy=AccessPolicy({TOKEN!r}))),
                         interface="127.0.0.1")
print(f"listening on http://127.0.0.1:{{port.getHost().port}}/", flush=True)
reactor.run()
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    server = ChildServer(process, line.split("listening on ", 1)[1].strip(), [line])
    try:
        assert handshake(server, {}, "/") == 401
        assert handshake(server, bearer(), "/") == 101
        assert handshake(server, {**bearer(), "Origin": "http://evil.example"}, "/") == 403
        assert handshake(server, {**bearer(), "Host": "evil.example"}, "/") == 403
    finally:
        stop_child_server(server)
