"""
The access policy's decisions and the token's sources, without sockets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluso_router.config import ServerConfig
from cluso_router.security import (
    AccessPolicy,
    RequestView,
    endpoint_is_loopback,
    is_loopback_name,
    load_token,
    normalize_origin,
    parse_cookies,
    split_host,
)

TOKEN = "policy-token-0123456789"


def view(method: str = "GET", websocket: bool = False, **headers: str) -> RequestView:
    return RequestView(
        method=method,
        headers={"host": "127.0.0.1:3000", **{k.replace("_", "-"): v for k, v in headers.items()}},
        query_token=None,
        local_port=3000,
        websocket=websocket,
    )


def test_token_sources_in_order(tmp_path: Path) -> None:
    """
    C{--token} wins over C{$CLUSO_TOKEN}; C{--token-file} is read and
    stripped; nothing given means none (the server makes one up).
    """
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    environ = {"CLUSO_TOKEN": "from-the-environment"}
    assert load_token("from-the-command-line", None, environ) == "from-the-command-line"
    assert load_token(None, str(token_file), environ) == TOKEN
    assert load_token(None, None, environ) == "from-the-environment"
    assert load_token(None, None, {}) is None
    with pytest.raises(ValueError, match="cannot read token file"):
        load_token(None, str(tmp_path / "missing"), {})
    with pytest.raises(ValueError, match="a token must be"):
        load_token("has spaces in it", None, {})


def test_each_start_without_a_token_gets_a_fresh_random_one(tmp_path: Path) -> None:
    """
    Auth is on by default with a random 256-bit token per configuration;
    C{auth="none"} carries no token at all.
    """
    first = ServerConfig(root=str(tmp_path)).token
    second = ServerConfig(root=str(tmp_path)).token
    assert first is not None
    assert second is not None
    assert first != second
    assert len(first) >= 43
    assert ServerConfig(root=str(tmp_path), auth="none").token is None


def test_token_comparison() -> None:
    """
    Only the exact token matches, whatever the length of the guess; with
    auth off nothing is a token and every request is authenticated.
    """
    policy = AccessPolicy(TOKEN)
    assert policy.token_matches(TOKEN)
    assert not policy.token_matches(TOKEN[:-1] + "X")
    assert not policy.token_matches(TOKEN + "X")
    assert not policy.token_matches("")
    off = AccessPolicy(None)
    assert not off.token_matches(TOKEN)
    assert off.check(view()) is None


def test_checks_come_in_order_and_are_counted() -> None:
    """
    Host before Origin before token; each refusal is counted by reason.
    A foreign Origin on a GET is not refused (it cannot read the answer),
    on a POST or a handshake it is.
    """
    policy = AccessPolicy(TOKEN)

    def refused_for(request: RequestView) -> str | None:
        refusal = policy.check(request)
        return None if refusal is None else refusal.reason

    evil = "http://evil.example"
    assert refused_for(view(host="evil.example", origin=evil)) == "host"
    assert refused_for(view("POST", origin=evil)) == "origin"
    assert refused_for(view(websocket=True, origin=evil)) == "origin"
    assert refused_for(view(origin=evil)) == "token"
    assert refused_for(view(x_api_key=TOKEN, origin=evil)) is None
    assert refused_for(view("OPTIONS")) is None
    assert policy.refusals == {"host": 1, "origin": 2, "token": 1}


def test_origins_are_compared_exactly() -> None:
    """
    Origins compare in one normal form (default ports spelled out); a
    wildcard, C{null} or a URL with a path is not an origin.
    """
    assert normalize_origin("HTTP://Dev.Example") == "http://dev.example:80"
    assert normalize_origin("https://[::1]") == "https://[::1]:443"
    for bad in ("*", "null", "http://x.example/app", "ftp://x.example", "http://u@x.example"):
        with pytest.raises(ValueError):
            normalize_origin(bad)
    policy = AccessPolicy(TOKEN, allowed_origins=["http://dev.example"])
    assert policy.origin_allowed("http://dev.example:80", 3000)
    assert policy.origin_allowed("http://localhost:3000", 3000)
    assert not policy.origin_allowed("http://localhost:3001", 3000)
    assert not policy.origin_allowed("http://dev.example:8080", 3000)


def test_hosts_and_loopback_names() -> None:
    """
    Host headers parse with ports and IPv6 brackets; only C{localhost} and
    loopback addresses are loopback names.
    """
    assert split_host("[::1]:3000") == ("::1", 3000)
    assert split_host("LocalHost.") == ("localhost", None)
    assert split_host("x:99999") is None
    assert is_loopback_name("127.8.9.10")
    assert is_loopback_name("::1")
    assert not is_loopback_name("localhost.evil.example")
    assert not is_loopback_name("127.0.0.1.evil.example")
    policy = AccessPolicy(TOKEN, allowed_hosts=["lan.example", "proxy.example:8443"])
    assert policy.host_allowed("lan.example:1")
    assert policy.host_allowed("proxy.example:8443")
    assert not policy.host_allowed("proxy.example:8444")
    assert not policy.host_allowed(None)


def test_listening_endpoints_that_count_as_loopback() -> None:
    """
    What C{--auth none} accepts: TCP on a loopback interface and UNIX
    sockets; TCP on every interface is refused.
    """
    assert endpoint_is_loopback("tcp:3000:interface=127.0.0.1")
    assert endpoint_is_loopback("tcp6:3000:interface=\\:\\:1")
    assert endpoint_is_loopback("unix:/run/cluso.sock")
    assert endpoint_is_loopback("tcp:3000") is False
    assert endpoint_is_loopback("tcp:3000:interface=0.0.0.0") is False
    with pytest.raises(ValueError, match="--auth none is refused"):
        ServerConfig(auth="none", listen="tcp:3000")


def test_cookie_header_parsing() -> None:
    """
    Cookie pairs are split leniently; malformed ones are skipped.
    """
    assert parse_cookies('a=1; junk; b="2" ;c=') == {"a": "1", "b": "2", "c": ""}


def test_a_strict_origin_endpoint_refuses_foreign_pages_on_every_method() -> None:
    """
    A GET from a foreign origin is served (without CORS) on ordinary routes,
    but refused where every method is checked, as the MCP endpoint is; the
    server's own origin passes there too.
    """
    policy = AccessPolicy(TOKEN)
    authorization = f"Bearer {TOKEN}"
    foreign = view("GET", origin="http://localhost.evil.example", authorization=authorization)
    assert policy.check(foreign) is None
    refusal = policy.check(foreign, strict_origin=True)
    assert refusal is not None
    assert (refusal.status, refusal.reason) == (403, "origin")
    own = view("GET", origin="http://127.0.0.1:3000", authorization=authorization)
    assert policy.check(own, strict_origin=True) is None
