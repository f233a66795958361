"""
Third-party clients of the router's contracts under Node.js: the official
TypeScript MCP SDK's client against C{/mcp}, and C{@asyncapi/parser}
validating C{/api/asyncapi.json} of a real C{twistd cluso} running every
source, a third-party one among them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_twisted
import treq
from support.gitrepo import make_repo
from support.servers import start_twistd, stop_child_server
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

JS_DIR = Path(__file__).parent / "contracts_js"

#: The channels each source claims (the workspace API claims files and git
#: whatever runs).
SOURCE_CHANNELS = {
    "files": {"files"},
    "git": {"git"},
    "search": {"search"},
    "validation": {"validation"},
    "lsp": {"diagnostics", "lsp"},
    "ai": {"ai-response"},
    "ticker": {"ticker"},
}

TICKER = '''
"""
A third-party event source for the contract tests: it claims one channel,
with a schema and an example, as any installed plugin would.
"""

from cluso_router.sources import SourceService

TICK = {
    "type": "object",
    "required": ["n", "label"],
    "properties": {"n": {"type": "integer", "minimum": 1}, "label": {"type": "string"}},
}


class Ticker(SourceService):
    def startSource(self):
        self.context.claim_channel(
            "ticker",
            "A tick from a third-party source",
            schema=TICK,
            examples=[{"n": 1, "label": "first"}],
        )


def make_source(context):
    return Ticker(context)
'''

TICKER_PLUGIN = """
from cluso_router.sources import SourcePlugin

ticker = SourcePlugin(
    name="ticker",
    description="Ticks on the ticker channel (contract tests).",
    service="cluso_ticker.make_source",
    applies=lambda root: False,
)
"""


def node_tools() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; run scripts/test")
    if not (JS_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("the Node packages are missing: npm ci --prefix tests/system/contracts_js")
    return node


def within(d: Deferred[Any], timeout: float = 60.0) -> Deferred[Any]:
    return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_the_typescript_sdk_client_uses_tools_and_resources(secured_server: Any) -> None:
    """
    The TypeScript SDK's client connects with the token (2025-11-25), lists
    every tool with its read-only mark, writes and reads a file, gets the
    HTTP API's message for a refused path, searches with progress, and is
    told of an event posted over HTTP on a channel it subscribed to, whose
    history it then reads; it ends its session with DELETE.
    """
    node = node_tools()
    root = Path(secured_server.service.config.root)
    for i in range(120):
        (root / f"n{i:03}.txt").write_text(f"needle {i}\n")
    out, err, code = await within(
        getProcessOutputAndValue(
            node,
            [
                str(JS_DIR / "mcp_client.mjs"),
                secured_server.url + "mcp",
                str(secured_server.token),
                secured_server.url + "api/events/",
            ],
            path=str(JS_DIR),
        )
    )
    steps = {k: v for line in out.decode().splitlines() for k, v in json.loads(line).items()}
    assert code == 0, (steps, err.decode())
    assert steps["server"]["name"] == "cluso-router"
    tools = dict(steps["tools"])
    assert tools["files.readFile"] is True
    assert tools["files.writeFile"] is False
    assert set(tools) >= {"files.searchInFiles", "git.getStatus", "server.info"}
    assert steps["written"] == {"path": "from-ts.txt", "bytesWritten": 33}
    assert steps["read"]["content"] == "written by the TypeScript client\n"
    assert steps["refused"] == {
        "isError": True,
        "text": "Failed to read file: Path traversal detected: ../outside",
    }
    assert steps["search"]["results"] == 120
    assert len(steps["search"]["progress"]) >= 2
    assert steps["search"]["progress"][-1]["progress"] == 121
    assert steps["posted"] == 200
    assert steps["updates"] == ["cluso://channels/from-ts"]
    assert [e["data"] for e in steps["history"]["events"]] == [{"hello": "agents"}]
    assert steps["closed"] is True
    assert len(secured_server.service.mcp.clients) == 0


@pytest.fixture
def third_party(tmp_path: Path) -> Path:
    """
    A directory to put on PYTHONPATH holding the ticker source and its
    dropin.
    """
    site = tmp_path / "site"
    (site / "cluso_plugins").mkdir(parents=True)
    (site / "cluso_ticker.py").write_text(TICKER)
    (site / "cluso_plugins" / "cluso_ticker_plugin.py").write_text(TICKER_PLUGIN)
    return site


@pytest_twisted.ensureDeferred
async def test_the_asyncapi_document_describes_every_running_channel(
    third_party: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A twistd cluso running every source, a third-party one among them,
    serves an AsyncAPI 3.0 document that @asyncapi/parser accepts without
    an error, naming every channel the running sources claimed, plus the
    JSON dialect's requests with their replies; every example event in it
    validates against its payload schema.
    """
    node = node_tools()
    monkeypatch.setenv("PYTHONPATH", str(third_party))
    root = make_repo(tmp_path / "root", {"a.py": "import os\n"})
    child = start_twistd(root, "--sources", "all", auth=True)
    try:
        response = await treq.get(child.url + "api/asyncapi.json", headers=child.headers)
        assert response.code == 200
        document = json.loads(await response.content())
    finally:
        stop_child_server(child)
    started = set(re.findall(r"Event source (\S+) started", "".join(child.log)))
    assert started >= {"files", "git", "search", "validation", "lsp", "ticker"}
    expected = {"files", "git", "backup", "router.stats"}.union(
        *(SOURCE_CHANNELS[s] for s in started)
    )

    saved = tmp_path / "asyncapi.json"
    saved.write_text(json.dumps(document))
    out, err, code = await within(
        getProcessOutputAndValue(
            node, [str(JS_DIR / "validate_asyncapi.mjs"), str(saved)], path=str(JS_DIR)
        )
    )
    parsed = json.loads(out.decode())
    assert code == 0, (parsed, err.decode())
    errors = [d for d in parsed["diagnostics"] if d["severity"] == 0]
    assert errors == []
    assert set(parsed["channels"]) == expected | {None, "{channel}"}
    assert {"subscribe", "unsubscribe", "invoke", "send"} <= set(parsed["operations"])
    assert {f"receive.{c}" for c in expected} <= set(parsed["operations"])

    ticker = document["channels"]["ticker"]
    assert ticker["description"] == "A tick from a third-party source"
    assert ticker["bindings"]["ws"]["method"] == "GET"
    assert document["servers"]["router"]["pathname"] == "/ws"
    examples = 0
    for channel in document["channels"].values():
        for message in channel["messages"].values():
            validator = jsonschema.Draft7Validator(message["payload"])
            for example in message.get("examples", ()):
                validator.validate(example["payload"])
                examples += 1
    assert examples >= len(expected) + 2
