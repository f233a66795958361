"""
The parts of signing in that need no socket: browser sessions on a fake
clock, the token as a WebSocket subprotocol, redirects and redaction of
sign-in URLs, the kept per-user token, and the files and sockets the
server makes private.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from cluso_router._logfile import twistd_log_file
from cluso_router.security import AccessPolicy, RequestView, cookie_name, subprotocol_tokens
from cluso_router.service import private_unix_endpoint, sign_in_banner
from cluso_router.sessions import SessionTable
from cluso_router.tokenstore import stored_token, token_path
from cluso_router.web.auth import query_token, redact, same_origin_location, without_token
from cluso_router.web.pages import host_refused_page

TOKEN = "unit-token-0123456789"


def test_sessions_expire_are_bounded_and_revoked() -> None:
    """
    A session id is valid until its lifetime has passed; beyond the
    table's capacity the oldest session ends; revoking ends them all;
    expired sessions leave the table.
    """
    clock = Clock()
    table = SessionTable(clock, lifetime=100, capacity=3)
    first = table.open()
    clock.advance(10)
    second, third = table.open(), table.open()
    assert all(table.valid(s) for s in (first, second, third))
    assert len({first, second, third}) == 3
    clock.advance(40)
    fourth = table.open()
    assert not table.valid(first)
    assert table.valid(fourth)
    assert len(table) == 3
    clock.advance(60)
    assert not table.valid(second)
    assert not table.valid(third)
    assert table.valid(fourth)
    assert len(table) == 1
    table.revoke_all()
    assert not table.valid(fourth)
    assert len(table) == 0
    with pytest.raises(ValueError):
        SessionTable(clock, lifetime=0)
    with pytest.raises(ValueError):
        SessionTable(clock, capacity=0)


def view(websocket: bool = False, **headers: str) -> RequestView:
    return RequestView("GET", {"host": "127.0.0.1:3000", **headers}, None, 3000, websocket)


def test_session_cookie_and_subprotocol_authenticate() -> None:
    """
    The cookie authenticates only with a live session id of this port
    (the token itself there is not accepted); the token percent-encoded in
    a C{cluso.token.} subprotocol authenticates a handshake.
    """
    policy = AccessPolicy(TOKEN, sessions=SessionTable(Clock()))
    session = policy.sessions.open()
    name = cookie_name(3000)
    assert policy.authenticated(view(cookie=f"a=1; {name}={session}"))
    assert not policy.authenticated(view(cookie=f"{name}={TOKEN}"))
    assert not policy.authenticated(view(cookie=f"{cookie_name(3001)}={session}"))

    odd = "odd/token+with=chars"
    odd_policy = AccessPolicy(odd)
    offer = "cluso.v1, cluso.token.odd%2Ftoken%2Bwith%3Dchars"
    assert subprotocol_tokens(offer) == [odd]
    assert odd_policy.authenticated(view(True, **{"sec-websocket-protocol": offer}))
    assert not odd_policy.authenticated(view(False, **{"sec-websocket-protocol": offer}))
    assert not odd_policy.authenticated(
        view(True, **{"sec-websocket-protocol": "cluso.v1, cluso.token.wrong"})
    )


def test_sign_in_redirects_stay_on_this_server() -> None:
    """
    The place a sign-in redirects to is a path of this server with the
    token arguments gone (however their names are encoded), never an
    address a browser would read as another host.
    """
    cases = {
        b"/?token=T": b"/",
        b"/app/x?a=1&token=T&b=%20": b"/app/x?a=1&b=%20",
        b"//evil.example/x?token=T": b"/evil.example/x",
        b"/\\evil.example?token=T": b"/%5Cevil.example",
        b"/\t/evil.example?token=T": b"/%09/evil.example",
        b"http://evil.example/x?token=T": b"/",
        b"/x?%74oken=T&keep=1": b"/x?keep=1",
    }
    for uri, location in cases.items():
        assert same_origin_location(uri) == location, uri
    assert without_token(b"/api/events/x?%74oken=T&a=b") == b"/api/events/x?a=b"


def test_token_arguments_are_read_and_redacted_after_decoding() -> None:
    """
    C{%74oken} is the C{token} argument, as URLs define it; the log hides
    every such value, in the request and the Referer, and leaves other
    arguments alone.
    """
    assert query_token(b"/x?%74oken=abc") == "abc"
    assert query_token(b"/x?tokens=abc") is None
    line = (
        '127.0.0.1 - - [x] "GET /?%74oken=secret1&a=tok HTTP/1.1" 302 0 '
        '"http://h/?TOKEN=secret2" "agent token=secret3"'
    )
    redacted = redact(line)
    for secret in ("secret1", "secret2", "secret3"):
        assert secret not in redacted
    assert "%74oken=[redacted]" in redacted
    assert "a=tok" in redacted
    assert redact("/x?mytoken=keep") == "/x?mytoken=keep"


def test_the_kept_token(tmp_path: Path) -> None:
    """
    The per-user token lives under C{$XDG_STATE_HOME} (a relative one is
    ignored for C{~/.local/state}); it is made once, mode 0600, then read
    back, and replaced only when rotated; an unusable one is an error that
    names the way out.
    """
    assert token_path({"XDG_STATE_HOME": "/s"}) == Path("/s/cluso-router/token")
    assert token_path({"XDG_STATE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.local/state/cluso-router/token"
    )
    path = tmp_path / "state" / "cluso-router" / "token"
    made = stored_token(path)
    assert stored_token(path) == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]
    rotated = stored_token(path, rotate=True)
    assert rotated != made
    assert stored_token(path) == rotated
    path.write_text("bad token\n")
    with pytest.raises(ValueError, match="--rotate-token"):
        stored_token(path)


def test_which_log_file_twistd_would_write() -> None:
    """
    twistd logs to C{--logfile}, or to C{twistd.log} as a daemon; with
    C{-n} and no file, to standard output; with syslog or its own logger,
    elsewhere.
    """
    assert twistd_log_file(None) is None
    assert twistd_log_file({"nodaemon": True, "logfile": None}) is None
    assert twistd_log_file({"nodaemon": True, "logfile": "-"}) is None
    assert twistd_log_file({"nodaemon": True, "logfile": "x.log"}) == "x.log"
    assert twistd_log_file({"nodaemon": False, "logfile": None}) == "twistd.log"
    assert twistd_log_file({"nodaemon": False, "syslog": True}) is None
    assert twistd_log_file({"logfile": "x.log", "logger": "a.b"}) is None


def test_unix_sockets_default_to_their_owner_only() -> None:
    """
    A UNIX endpoint without a mode gets C{mode=600}; one with a mode, and
    every other kind of endpoint, is left as given.
    """
    assert private_unix_endpoint("unix:/run/c.sock") == "unix:/run/c.sock:mode=600"
    assert private_unix_endpoint("unix:/run/c.sock:mode=660") == "unix:/run/c.sock:mode=660"
    assert private_unix_endpoint("unix:address=/r/c:mode=640") == "unix:address=/r/c:mode=640"
    assert private_unix_endpoint("tcp:3000") == "tcp:3000"


def test_sign_in_banner_and_pages() -> None:
    """
    The start block holds the sign-in URL on a line of its own (the token
    in the fragment for the dashboard, in the query for a C{--ui} app) and
    says where the token is kept; the host page escapes what it repeats.
    """
    banner = sign_in_banner("http://127.0.0.1:3000/", "a/b", True, "/s/token")
    lines = banner.splitlines()
    assert "      http://127.0.0.1:3000/#token=a%2Fb" in lines
    assert lines[1] == lines[-1] == "=" * 72
    assert "The token is kept in /s/token (--rotate-token makes a new one)." in banner
    ui = sign_in_banner("http://127.0.0.1:3000/", "t" * 10, False, None)
    assert "http://127.0.0.1:3000/?token=tttttttttt" in ui
    assert "--token-file" in ui
    page = host_refused_page("<x>", "Forbidden: <x>").decode()
    assert "<x>" not in page
    assert "&lt;x&gt;" in page
