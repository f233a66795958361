"""
What a browser is shown instead of the JSON envelope when the server
refuses it (not signed in, or reached by a host name it does not allow),
and the headers that keep our own pages from being framed, sniffed or
leaking their address.

The pages are fixed text plus at most an escaped host name; they hold no
script and no secret.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable
from typing import Final

from twisted.web.server import Request

#: Sent with every answer of the site.
SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)

#: The dashboard's policy: its own scripts, styles and connections only.
#: (C{'self'} covers the page's own C{ws://} origin in current browsers.)
DASHBOARD_CSP: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;"
    "color:#1d2433}code{background:#eef1f6;padding:.1em .3em;border-radius:3px}"
)
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
#: A page of this module: no script at all, only its own inline style.
PAGE_CSP: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
).encode()


def wants_html(request: Request) -> bool:
    """
    Whether C{request} is a browser loading a page (it asks for HTML), as
    opposed to an API client or a script's C{fetch}.
    """
    accept = request.getHeader(b"accept") or b""
    return request.method in (b"GET", b"HEAD") and b"text/html" in accept.lower()


def sign_in_page() -> bytes:
    """
    The page a browser gets without credentials: where to find the
    address that signs it in.
    """
    return _page(
        "Sign in to cluso-router",
        [
            "This server needs its access token before it shows anything.",
            "Open the sign-in address the server printed when it started (in the "
            "terminal or log where it runs). It looks like "
            "<code>http://127.0.0.1:3000/#token=…</code> (or <code>/?token=…</code> "
            "when the server serves another app with <code>--ui</code>).",
            "A server started without <code>--token</code>, <code>--token-file</code> or "
            "<code>CLUSO_TOKEN</code> keeps its token in "
            "<code>$XDG_STATE_HOME/cluso-router/token</code> (by default "
            "<code>~/.local/state/cluso-router/token</code>): open the server's address "
            "with <code>#token=</code> and the token added.",
        ],
    )


def host_refused_page(host: str | None, message: str) -> bytes:
    """
    The page a browser gets when the server does not answer to C{host}.
    """
    return _page(
        "Host name not allowed",
        [
            html.escape(message),
            "The server only answers to <code>localhost</code>, loopback addresses and "
            "the names given with <code>--allow-host</code>, so that other web pages "
            "cannot reach it through a name of their own (DNS rebinding).",
            f"Host asked for: <code>{html.escape(host or '(none)')}</code>",
        ],
    )


def write_page(request: Request, status: int, page: bytes) -> bytes:
    """
    Answer C{request} with C{page} and status C{status}.
    """
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"content-security-policy", PAGE_CSP)
    request.setHeader(b"cache-control", b"no-store")
    return page


def _page(title: str, paragraphs: Iterable[str]) -> bytes:
    body = "".join(f"<p>{text}</p>\n" for text in paragraphs)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}</body>\n</html>\n"
    ).encode()
