"""
The embedding guide's examples run as written (a twisted.web application,
the whole server mounted in one, a klein app, an Autobahn WAMP component),
embedding is never open by default, and the public names stay what the
guide promises.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.server import Site

import cluso_router
from cluso_router import AccessPolicy, Router, websocket_resource
from cluso_router.testing import connect_client, until

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"
TOKEN = "embedding-token-0123456789"


def guide_example(name: str) -> dict[str, Any]:
    """
    Run the guide's code block marked C{# example: <name>}.
    """
    blocks = dict(re.findall(r"```python\n# example: (\S+)\n(.*?)```", GUIDE.read_text(), re.S))
    namespace: dict[str, Any] = {}
    exec(compile(blocks[name], f"{GUIDE}:{name}", "exec"), namespace)
    return namespace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_twisted.ensureDeferred
async def test_twisted_web_example_serves_its_site_and_events(tmp_path: Path) -> None:
    """
    The guide's application serves its own page and /ws on one port; a
    client with the token gets events published from its code, one from a
    foreign Origin or without the token is refused; stopping it closes the
    client with 1001.
    """
    example = guide_example("twisted-web")
    port = free_port()
    top, broadcaster = example["make_application"](
        f"tcp:{port}:interface=127.0.0.1", str(tmp_path), TOKEN
    )
    top.startService()
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        page = await treq.get(f"http://127.0.0.1:{port}/")
        assert b"My tool" in await page.content()
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}):
            with pytest.raises(Exception, match=r"40[13]"):
                await connect_client(url, headers=headers)

        client = await connect_client(url, headers={"Authorization": f"Bearer {TOKEN}"})
        greeting = await client.next_message()
        assert greeting["data"]["cwd"] == str(tmp_path)
        for channel in ("build", "validation"):
            await client.request({"type": "subscribe", "channel": channel, "id": channel})

        assert example["on_build_finished"](broadcaster, "docs", True) == 1
        build = await client.next_message()
        validation = await client.next_message()
        assert build["data"] == {"target": "docs", "ok": True}
        assert validation["data"]["validation"]["passed"] is True
    finally:
        await top.stopService()
    _, code, _ = await client.closed
    assert code == 1001


def test_a_websocket_resource_cannot_be_built_without_a_policy() -> None:
    """
    websocket_resource has no default policy: leaving it out, or passing
    None, fails at once with a message naming the choices.
    """
    router = Router()
    with pytest.raises(TypeError, match="policy"):
        websocket_resource(router)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"AccessPolicy\(token\)"):
        websocket_resource(router, policy=None)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_the_documented_policy_refuses_foreign_pages_without_the_token() -> None:
    """
    With AccessPolicy(token), a handshake from another origin without the
    token is refused; the same from the server's own origin with the token
    is let in; AccessPolicy.insecure() lets the foreign page in.
    """
    router = Router()
    router.startService()
    for policy, origin, headers, allowed in (
        (AccessPolicy(TOKEN), "http://evil.example", {}, False),
        (AccessPolicy(TOKEN), None, {"Authorization": f"Bearer {TOKEN}"}, True),
        (AccessPolicy.insecure(), "http://evil.example", {}, True),
    ):
        port = reactor.listenTCP(
            0, Site(websocket_resource(router, policy=policy)), interface="127.0.0.1"
        )
        url = f"ws://127.0.0.1:{port.getHost().port}/"
        if origin is not None:
            headers = {**headers, "Origin": origin}
        try:
            if allowed:
                client = await connect_client(url, headers=headers)
                await client.next_message()
                await client.close()
            else:
                with pytest.raises(Exception, match="403"):
                    await connect_client(url, headers=headers)
        finally:
            await port.stopListening()
    await router.stopService()


@pytest_twisted.ensureDeferred
async def test_mounted_example_serves_the_whole_server_under_a_path(tmp_path: Path) -> None:
    """
    ClusoService with listen=None, mounted at /cluso of the application's
    site and started by its MultiService: the API and the WebSocket answer
    under that path with the token, and refuse without it.
    """
    example = guide_example("mounted")
    port = free_port()
    top, cluso = example["make_application"](
        f"tcp:{port}:interface=127.0.0.1", str(tmp_path), TOKEN
    )
    top.startService()
    base = f"http://127.0.0.1:{port}/cluso/"
    try:
        assert cluso.port is None
        refused = await treq.get(base + "api/health")
        assert refused.code == 401
        await refused.content()
        health = await treq.get(base + "api/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert json.loads(await health.content())["data"]["status"] == "ok"
        client = await connect_client(
            f"ws://127.0.0.1:{port}/cluso/ws", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert (await client.next_message())["data"]["status"] == "connected"
        assert cluso.router.running
    finally:
        await top.stopService()
    _, code, _ = await client.closed
    assert code == 1001


@pytest_twisted.ensureDeferred
async def test_klein_example_serves_the_server_as_a_branch(tmp_path: Path) -> None:
    """
    The klein app answers its own route and hands /cluso/ to the server,
    whose API answers with the token.
    """
    example = guide_example("klein")
    app, cluso = example["make_app"](str(tmp_path), TOKEN)
    cluso.startService()
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/"
    try:
        home = await treq.get(base)
        assert await home.content() == b"My klein tool"
        info = await treq.get(
            base + "cluso/api/health", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert info.code == 200
        assert json.loads(await info.content())["success"] is True
    finally:
        await port.stopListening()
        await cluso.stopService()


@pytest_twisted.ensureDeferred
async def test_wamp_component_example_joins_as_a_component_of_the_router(tmp_path: Path) -> None:
    """
    The Autobahn component joins the router's realm with the token as its
    ticket; its procedure is callable by a JSON-dialect client, and it
    receives events published on the router.
    """
    from cluso_router.testing import start_server

    server = start_server(tmp_path, sources=(), token=TOKEN)
    seen: list[Any] = []
    component = guide_example("wamp-component")["make_component"](server.ws_url, TOKEN, seen)
    done: Deferred[Any] = component.start(reactor)
    try:
        await until(lambda: "myapp.shout" in server.service.router.procedures.names())
        client = await connect_client(server.ws_url, headers=server.headers)
        await client.next_message()
        reply = await client.request(
            {"type": "invoke", "id": 1, "channel": "myapp.shout", "data": "hi"}
        )
        assert reply["data"] == "HI"
        server.service.broadcaster.emit("build", {"ok": True})
        await until(lambda: seen == [{"ok": True}])
        await client.close()
    finally:
        await component.stop()
        await done
        await server.stop()


def test_public_names_are_exported() -> None:
    """
    The package exports exactly its documented public API, and each name
    resolves.
    """
    expected = {
        "AccessPolicy",
        "ClusoService",
        "ClusoWebSocketFactory",
        "DeliveryReport",
        "Event",
        "EventBroadcaster",
        "IEventSourceFactory",
        "IFrameEncoder",
        "IPublisher",
        "ISession",
        "Options",
        "PingSweeper",
        "ProcedureError",
        "Router",
        "ServerConfig",
        "SourceContext",
        "__version__",
        "build_site",
        "guard",
        "makeService",
        "websocket_resource",
    }
    assert set(cluso_router.__all__) == expected
    for name in expected:
        assert getattr(cluso_router, name) is not None
