"""
The embedding guide's example runs as written, and the public names stay
what the guide promises.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest_twisted

import cluso_router
from cluso_router.testing import connect_client

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"


def guide_example() -> dict[str, Any]:
    (code,) = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(GUIDE), "exec"), namespace)
    return namespace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_twisted.ensureDeferred
async def test_embedding_example_serves_its_site_and_events(tmp_path: Path) -> None:
    """
    The guide's application serves its own page and /ws on one port, events
    published from its code reach a subscribed client, and stopping it
    closes the client with 1001.
    """
    import treq

    example = guide_example()
    port = free_port()
    top, broadcaster = example["make_application"](f"tcp:{port}:interface=127.0.0.1", str(tmp_path))
    top.startService()
    try:
        page = await treq.get(f"http://127.0.0.1:{port}/")
        assert b"My tool" in await page.content()

        client = await connect_client(f"ws://127.0.0.1:{port}/ws")
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


def test_public_names_are_exported() -> None:
    """
    The package exports exactly its documented public API, and each name
    resolves.
    """
    expected = {
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
        "makeService",
        "websocket_resource",
    }
    assert set(cluso_router.__all__) == expected
    for name in expected:
        assert getattr(cluso_router, name) is not None
