"""
AutobahnJS under Node.js against the router's WAMP endpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

JS_DIR = Path(__file__).parent / "wamp_js"


def within(d: Deferred[Any], timeout: float = 30.0) -> Deferred[Any]:
    return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_autobahn_js_subscribes_and_calls(server: Any) -> None:
    """
    AutobahnJS in Node.js joins, calls C{server.info} and a procedure that
    announces a file change, and receives that change on C{files}.
    """
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; run the README's test command")
    if not (JS_DIR / "node_modules" / "autobahn").is_dir():
        pytest.fail("AutobahnJS is missing: npm ci --prefix tests/system/wamp_js")

    def touch(path: str) -> dict[str, str]:
        server.service.broadcaster.file_changed(path, "add")
        return {"touched": path}

    server.service.router.register("test.touch", touch)

    out, err, code = await within(
        getProcessOutputAndValue(
            node, [str(JS_DIR / "client.js"), server.ws_url, "cluso"], path=str(JS_DIR)
        ),
        30,
    )

    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert code == 0, (lines, err.decode())
    printed = {key: value for line in lines for key, value in line.items()}
    assert printed["joined"]["authmethod"] == "anonymous"
    assert printed["info"]["cwd"] == server.service.config.root
    assert printed["touched"] == {"touched": "from-js.txt"}
    assert (printed["event"]["file"], printed["event"]["event"]) == ("from-js.txt", "add")
