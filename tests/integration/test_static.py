"""
Static files over real HTTP: the browser client at /client/, the dashboard
at /, a built single-page app with --ui and the original server's rules,
and the package shipping the files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import pytest_twisted
import treq
from support.servers import TEST_TOKEN, start_service

from cluso_router.config import ServerConfig
from cluso_router.tap import Options
from cluso_router.web.static import STATIC_ROOT

REPO = Path(__file__).resolve().parents[2]
SECRET = "content of a file outside the UI directory"
PACKAGE_FILES = sorted(
    str(path.relative_to(STATIC_ROOT)) for path in STATIC_ROOT.rglob("*") if path.is_file()
)


async def fetch(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any, bytes]:
    response = await treq.request(method, url, **kwargs)
    return response.code, response.headers, await response.content()


def header(headers: Any, name: str) -> str | None:
    values: list[str] | None = headers.getRawHeaders(name)
    return values[0] if values else None


async def expect_json_404(url: str) -> None:
    code, headers, body = await fetch(url)
    assert code == 404, url
    assert header(headers, "content-type") == "application/json; charset=utf-8"
    assert json.loads(body)["success"] is False


@pytest_twisted.ensureDeferred
async def test_dashboard_at_root(server: Any) -> None:
    """
    / is the dashboard page, never cached without revalidation; every file
    it loads is served with a type browsers accept for it.
    """
    code, headers, body = await fetch(server.url)
    assert code == 200
    assert header(headers, "content-type") == "text/html; charset=utf-8"
    assert header(headers, "cache-control") == "no-cache"
    page = body.decode()
    assert '<script type="module" src="dashboard/dashboard.js">' in page
    types = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
    references = re.findall(r'(?:src|href)="(dashboard/[^"]+)"', page)
    assert sorted(references) == ["dashboard/dashboard.css", "dashboard/dashboard.js"]
    for reference in references:
        code, headers, _ = await fetch(server.url + reference)
        assert code == 200
        assert header(headers, "content-type") == types[reference.rsplit(".", 1)[1]]


@pytest_twisted.ensureDeferred
async def test_client_module_served(server: Any) -> None:
    """
    The client module and its declarations are served from the package, and
    the dashboard's import of the client resolves to it.
    """
    script = server.url + "client/cluso-client.js"
    code, headers, body = await fetch(script)
    assert code == 200
    assert header(headers, "content-type") == "text/javascript; charset=utf-8"
    assert body == (STATIC_ROOT / "client" / "cluso-client.js").read_bytes()
    code, headers, body = await fetch(server.url + "client/cluso-client.d.ts")
    assert code == 200
    assert b"export declare class ClusoClient" in body

    dashboard = (STATIC_ROOT / "dashboard" / "dashboard.js").read_text()
    imported = re.search(r'from "(\.\./client/[^"]+)"', dashboard)
    assert imported is not None
    assert urljoin(server.url + "dashboard/dashboard.js", imported.group(1)) == script


@pytest_twisted.ensureDeferred
async def test_conditional_and_head_requests(server: Any) -> None:
    """
    HEAD answers without a body; a request carrying the Last-Modified date
    gets 304.
    """
    url = server.url + "client/cluso-client.js"
    code, headers, body = await fetch(url, "HEAD")
    assert code == 200
    assert body == b""
    modified = header(headers, "last-modified")
    assert modified is not None
    code, _, body = await fetch(url, headers={"If-Modified-Since": modified})
    assert code == 304
    assert body == b""


@pytest_twisted.ensureDeferred
async def test_unknown_static_paths_are_json_404(server: Any) -> None:
    """
    No directory listings and no guessing: unknown names under /client/ and
    /dashboard/, paths below a file, and unknown top-level paths get the
    API's JSON 404; the API's own routes are unchanged.
    """
    for path in [
        "client/",
        "client/missing.js",
        "client/cluso-client.js/more",
        "client/..%2f..%2fsetup.cfg",
        "dashboard/",
        "dashboard/../../setup.cfg",
        "nothing-here",
        "assets/app.js",
        "api/nothing",
    ]:
        await expect_json_404(server.url + path)
    code, _, body = await fetch(server.url + "api/health")
    assert code == 200
    assert json.loads(body)["data"]["status"] == "ok"


@pytest_twisted.ensureDeferred
async def test_static_files_answer_only_get_and_head(server: Any) -> None:
    """
    Other methods on a static file get a JSON 405 naming the allowed ones.
    """
    code, headers, body = await fetch(server.url + "client/cluso-client.js", "POST", data=b"{}")
    assert code == 405
    assert header(headers, "allow") == "GET, HEAD"
    assert json.loads(body)["success"] is False


@pytest.fixture
def ui_dir(tmp_path: Path) -> Path:
    """
    A built single-page app, plus a secret beside it and links that lead
    out of it.
    """
    (tmp_path / "secret.txt").write_text(SECRET)
    ui = tmp_path / "ui"
    (ui / "assets" / "nested").mkdir(parents=True)
    (ui / "index.html").write_text("<!doctype html><title>the app</title>")
    (ui / "assets" / "app-1234.js").write_text("export const app = 1;")
    (ui / "assets" / "app-1234.css").write_text("body{}")
    (ui / "assets" / "nested" / "logo.svg").write_text("<svg/>")
    (ui / "assets" / ".env").write_text("KEY=1")
    (ui / "assets" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (ui / "assets" / "up").symlink_to(tmp_path)
    (ui / "favicon.ico").write_bytes(b"\0\0\1\0")
    (ui / "manifest.json").write_text("{}")
    return ui


@pytest_twisted.async_yield_fixture
async def ui_server(tmp_path: Path, ui_dir: Path) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(root, auth="none", ui=str(ui_dir))
    yield running.url
    await running.service.stopService()


@pytest_twisted.ensureDeferred
async def test_ui_fallback_to_index(ui_server: str) -> None:
    """
    With --ui, / and every other non-API GET path is the app's index.html,
    as the original server did (top-level files such as manifest.json
    included); the API, the WebSocket path and the client keep their answers.
    """
    for path in ["", "projects/42/settings", "manifest.json", "dashboard/dashboard.js", "x.js"]:
        code, headers, body = await fetch(ui_server + path)
        assert code == 200, path
        assert header(headers, "content-type") == "text/html; charset=utf-8", path
        assert body == b"<!doctype html><title>the app</title>", path
    code, _, body = await fetch(ui_server + "api/health")
    assert json.loads(body)["data"]["status"] == "ok"
    await expect_json_404(ui_server + "api/nothing")
    code, headers, _ = await fetch(ui_server + "client/cluso-client.js")
    assert code == 200
    assert header(headers, "content-type") == "text/javascript; charset=utf-8"
    code, _, body = await fetch(ui_server + "ws")
    assert b"the app" not in body


@pytest_twisted.ensureDeferred
async def test_ui_assets_are_files(ui_server: str) -> None:
    """
    /assets/* and /favicon.ico are the files themselves with their types,
    nested directories included.
    """
    expected = {
        "assets/app-1234.js": ("text/javascript; charset=utf-8", b"export const app = 1;"),
        "assets/app-1234.css": ("text/css; charset=utf-8", b"body{}"),
        "assets/nested/logo.svg": ("image/svg+xml", b"<svg/>"),
        "favicon.ico": ("image/x-icon", b"\0\0\1\0"),
    }
    for path, (content_type, content) in expected.items():
        code, headers, body = await fetch(ui_server + path)
        assert code == 200, path
        assert header(headers, "content-type") == content_type, path
        assert body == content, path


@pytest_twisted.ensureDeferred
async def test_ui_assets_stay_inside_the_directory(ui_server: str) -> None:
    """
    A missing asset is a 404 (not index.html); dot-files, parent
    segments, encoded slashes and symbolic links leading out of the
    directory are refused, and nothing outside it is ever sent.
    """
    for path in [
        "assets/missing.js",
        "assets/",
        "assets",
        "assets/.env",
        "assets/%2e%2e/secret.txt",
        "assets/..%2fsecret.txt",
        "assets/nested%2f..%2f..%2f..%2fsecret.txt",
        "assets/escape.txt",
        "assets/up/secret.txt",
        "assets/%00.js",
    ]:
        code, _, body = await fetch(ui_server + path)
        assert code == 404, path
        assert SECRET.encode() not in body, path


@pytest_twisted.ensureDeferred
async def test_ui_only_get_and_head(ui_server: str) -> None:
    """
    The app's pages answer GET and HEAD only.
    """
    code, _, body = await fetch(ui_server + "projects/1", "POST", data=b"{}")
    assert code == 405
    assert json.loads(body)["success"] is False
    code, _, body = await fetch(ui_server + "projects/1", "HEAD")
    assert code == 200
    assert body == b""


@pytest_twisted.ensureDeferred
async def test_ui_needs_the_session_cookie_of_a_sign_in(tmp_path: Path, ui_dir: Path) -> None:
    """
    With token auth, a --ui app is served to signed-in browsers only (unlike
    the dashboard, which is public): a browser without credentials gets the
    sign-in page, the ?token= sign-in sets a session cookie, and with it the
    app's pages and its plain fetch calls to the API work; the client module
    stays public.
    """
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(root, token=TEST_TOKEN, ui=str(ui_dir))
    try:
        html = {"Accept": "text/html"}
        code, headers, body = await fetch(running.url + "projects/1", headers=html)
        assert code == 401
        assert header(headers, "content-type") == "text/html; charset=utf-8"
        assert b"the app" not in body
        code, _, _ = await fetch(running.url + "client/cluso-client.js")
        assert code == 200

        code, headers, _ = await fetch(
            running.url + f"projects/1?token={TEST_TOKEN}", allow_redirects=False
        )
        assert code == 302
        assert header(headers, "location") == "/projects/1"
        cookie = header(headers, "set-cookie")
        assert cookie is not None
        jar = {"Cookie": cookie.split(";", 1)[0]}
        code, headers, body = await fetch(running.url + "projects/1", headers={**html, **jar})
        assert code == 200
        assert body == b"<!doctype html><title>the app</title>"
        assert header(headers, "content-security-policy") == "frame-ancestors 'none'"
        code, _, body = await fetch(running.url + "api/health", headers=jar)
        assert code == 200
        assert json.loads(body)["data"]["status"] == "ok"
    finally:
        await running.service.stopService()


def test_ui_option_is_checked(tmp_path: Path, ui_dir: Path) -> None:
    """
    --ui must name a directory holding index.html; the path is made
    absolute and real.
    """
    options = Options()
    options.parseOptions(["--root", str(tmp_path), "--ui", str(ui_dir / "assets" / "..")])
    assert options["config"].ui == str(ui_dir.resolve())
    for bad in [tmp_path / "missing", ui_dir / "assets"]:
        with pytest.raises(ValueError, match=r"index\.html"):
            ServerConfig(root=str(tmp_path), ui=str(bad))


def test_package_ships_the_static_files(tmp_path: Path) -> None:
    """
    A wheel built from the project's metadata contains every file of the
    client and the dashboard.
    """
    source = tmp_path / "src"
    source.mkdir()
    for name in ["setup.cfg", "pyproject.toml", "README.md"]:
        shutil.copy(REPO / name, source / name)
    for name in ["cluso_grep", "cluso_router", "plugins", "twisted_plugins"]:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])",
            str(out),
        ],
        cwd=source,
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    [wheel] = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.removeprefix("cluso_router/static/")
            for name in archive.namelist()
            if name.startswith("cluso_router/static/")
        }
    assert {
        "client/cluso-client.js",
        "client/cluso-client.d.ts",
        "dashboard/index.html",
        "dashboard/dashboard.js",
        "dashboard/dashboard.css",
    } <= shipped
    assert sorted(shipped) == PACKAGE_FILES
