"""
The language-server source: LSP framing and JSON-RPC on their own, then the
real python-lsp-server (pylsp with pyflakes) driven by file changes, its
diagnostics on the WebSocket, the snapshot for late clients, and restarts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types
from support.servers import python_tool, start_service
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.python import usage

from cluso_router.service import ClusoService, EventBroadcaster
from cluso_router.sources import discover_sources
from cluso_router.sources.lsp import configured
from cluso_router.sources.lsp.config import parse_lsp_option
from cluso_router.sources.lsp.diagnostics import convert, uri_to_relative
from cluso_router.sources.lsp.framing import FramingError, MessageDecoder, encode_message
from cluso_router.sources.lsp.jsonrpc import JsonRpcConnection, RpcError
from cluso_router.sources.lsp.manager import LanguageServerManager
from cluso_router.tap import Options
from cluso_router.testing import (
    RecordingPublisher,
    WebSocketTestClient,
    connect_client,
    make_source_context,
    until,
)

#: Generous: pylsp's start-up on a loaded 2-core machine.
DIAGNOSTICS_TIMEOUT = 15.0

BROKEN = "import os\n\nprint(undefined_thing)\n"
FIXED = "import os\n\nprint(os.sep)\n"


@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=30), max_size=3), max_size=4),
    st.lists(st.integers(min_value=0, max_value=600), max_size=8),
)
def test_framing_survives_any_split(messages: list[dict[str, str]], cuts: list[int]) -> None:
    """
    Messages framed with Content-Length come out whole and in order however
    the bytes are cut, multi-byte UTF-8 included.
    """
    wire = b"".join(encode_message(m) for m in messages)
    decoder = MessageDecoder()
    bodies = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(wire)):
        bodies += decoder.feed(wire[start:cut])
        start = cut
    bodies += decoder.feed(wire[start:])
    assert [json.loads(b) for b in bodies] == messages


def test_framing_rejects_a_header_without_length() -> None:
    """
    A header block without Content-Length is a protocol error, not a hang.
    """
    with pytest.raises(FramingError, match="without Content-Length"):
        MessageDecoder().feed(b"Content-Type: x\r\n\r\n{}")


def test_jsonrpc_matches_answers_times_out_and_refuses_unknown_requests() -> None:
    """
    Responses resolve their request by id, an unanswered request fails
    after its timeout on the given clock, a server's request for an unknown
    method gets MethodNotFound, notifications reach the handler.
    """
    clock = Clock()
    sent: list[Any] = []
    notes: list[tuple[str, Any]] = []
    decoder = MessageDecoder()
    rpc = JsonRpcConnection(
        lambda data: sent.extend(json.loads(b) for b in decoder.feed(data)),
        clock,
        lambda method, params: notes.append((method, params)),
        {"workspace/configuration": lambda params: [None]},
    )
    answered = rpc.request("initialize", {}, timeout=5)
    silent = rpc.request("shutdown", None, timeout=5)
    results: list[Any] = []
    answered.addCallback(results.append)
    silent.addErrback(results.append)
    rpc.data_received(encode_message({"jsonrpc": "2.0", "id": 0, "result": {"ok": 1}}))
    rpc.data_received(encode_message({"jsonrpc": "2.0", "id": 7, "method": "x/unknown"}))
    rpc.data_received(
        encode_message({"jsonrpc": "2.0", "id": 8, "method": "workspace/configuration"})
    )
    rpc.data_received(encode_message({"jsonrpc": "2.0", "method": "note", "params": [1]}))
    clock.advance(5)
    assert results[0] == {"ok": 1}
    assert isinstance(results[1].value, RpcError)
    assert "no answer within 5s" in str(results[1].value)
    assert sent[2] == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32601, "message": "unsupported: x/unknown"},
    }
    assert sent[3] == {"jsonrpc": "2.0", "id": 8, "result": [None]}
    assert notes == [("note", [1])]


def test_diagnostics_are_one_based_with_severity_names(tmp_path: Path) -> None:
    """
    LSP's 0-based positions become 1-based lines and columns, severities
    become names, a missing source names the server, and URIs outside the
    root are not reported.
    """
    diagnostic = types.Diagnostic(
        range=types.Range(types.Position(2, 6), types.Position(2, 21)),
        message="undefined name 'x'",
        severity=types.DiagnosticSeverity.Warning,
    )
    assert convert("a/b.py", diagnostic, "python") == {
        "file": "a/b.py",
        "line": 3,
        "column": 7,
        "endLine": 3,
        "endColumn": 22,
        "message": "undefined name 'x'",
        "severity": "warning",
        "source": "python",
    }
    root = str(tmp_path)
    assert uri_to_relative((tmp_path / "a b.py").as_uri(), root) == "a b.py"
    assert uri_to_relative(Path("/etc/passwd").as_uri(), root) is None


def test_lsp_option_parsing() -> None:
    """
    --lsp takes LANG=COMMAND for known languages, NAME:.ext=COMMAND for
    others, and says what is wrong otherwise.
    """
    config = parse_lsp_option("python=pylsp -v")
    assert (config.language, config.command, config.serves("a/b.PY")) == (
        "python",
        ("pylsp", "-v"),
        True,
    )
    assert parse_lsp_option("zig:.zig=zls").extensions == (".zig",)
    with pytest.raises(ValueError, match="LANG=COMMAND"):
        parse_lsp_option("pylsp")
    with pytest.raises(ValueError, match="unknown language"):
        parse_lsp_option("cobol=cobol-ls")


async def next_event(
    client: WebSocketTestClient, channel: str, match: Callable[[Any], bool], timeout: float
) -> Any:
    """
    The first event on C{channel} whose data matches, skipping others.
    """
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while True:
        left = deadline - reactor.seconds()  # type: ignore[attr-defined]
        message = await client.next_message(max(left, 0.01))
        if message.get("channel") == channel and match(message["data"]):
            return message["data"]


def undefined_named(data: Any) -> bool:
    return any("undefined_thing" in d["message"] for d in data["diagnostics"])


@pytest_twisted.async_yield_fixture
async def lsp_server(tmp_path: Path) -> Any:
    """
    A server running only the lsp source (built by the plugin loader) with
    python=pylsp, and a client subscribed to diagnostics and lsp.
    """
    root = tmp_path / "root"
    root.mkdir()
    running = start_service(
        root,
        auth="none",
        sources=("lsp",),
        source_options={"lsp": {"lsp": parse_lsp_option("python=" + python_tool("pylsp"))}},
    )
    client = await connect_client(running.ws_url)
    await client.next_message()
    for channel in ("diagnostics", "lsp"):
        await client.request({"type": "subscribe", "channel": channel, "id": channel})
    yield running.service, root, running.url, client
    await client.close()
    await running.service.stopService()


def manager_of(service: ClusoService) -> LanguageServerManager:
    manager = service.sources.started["lsp"]
    assert isinstance(manager, LanguageServerManager)
    return manager


@pytest_twisted.ensureDeferred
async def test_pylsp_diagnostics_flow_clear_and_survive_a_crash(lsp_server: Any) -> None:
    """
    A file with an undefined name, announced as an API write would, yields
    a diagnostic naming it on the WebSocket; the snapshot (HTTP and invoke)
    has it; fixing the file clears it; killing pylsp restarts it and the
    diagnostics of the open files flow again; stopping the service stops
    pylsp.
    """
    service, root, url, client = lsp_server
    manager = manager_of(service)
    (root / "pkg").mkdir()
    (root / "pkg" / "bad.py").write_text(BROKEN)
    (root / "notes.txt").write_text("not python")
    service.file_changes.changed("notes.txt", "add")
    service.file_changes.changed("pkg/bad.py", "add")
    started = await next_event(client, "lsp", lambda d: d["type"] == "started", DIAGNOSTICS_TIMEOUT)
    assert started["language"] == "python"
    data = await next_event(client, "diagnostics", undefined_named, DIAGNOSTICS_TIMEOUT)
    assert data["file"] == "pkg/bad.py"
    assert data["cleared"] is False
    [diagnostic] = [d for d in data["diagnostics"] if "undefined_thing" in d["message"]]
    assert diagnostic == {
        **diagnostic,
        "file": "pkg/bad.py",
        "line": 3,
        "column": 7,
        "severity": "error",
        "source": "pyflakes",
    }

    response = await treq.get(url + "api/diagnostics")
    snapshot = (await response.json())["data"]
    assert diagnostic in snapshot["diagnostics"]
    assert snapshot["servers"][0]["state"] == "running"
    reply = await client.request(
        {"type": "invoke", "id": 1, "channel": "lsp.getDiagnostics", "data": {"file": "notes.txt"}}
    )
    assert reply["data"]["diagnostics"] == []

    (root / "pkg" / "bad.py").write_text(FIXED)
    service.file_changes.changed("pkg/bad.py", "change")
    cleared = await next_event(client, "diagnostics", lambda d: d["cleared"], DIAGNOSTICS_TIMEOUT)
    assert cleared == {**cleared, "file": "pkg/bad.py", "diagnostics": []}

    (root / "pkg" / "bad.py").write_text(BROKEN)
    service.file_changes.changed("pkg/bad.py", "change")
    await next_event(client, "diagnostics", undefined_named, DIAGNOSTICS_TIMEOUT)
    pid = manager.servers[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    restarting = await next_event(client, "lsp", lambda d: d["type"] == "restarting", 5.0)
    assert "signal 9" in restarting["reason"]
    await next_event(client, "lsp", lambda d: d["type"] == "started", DIAGNOSTICS_TIMEOUT)
    again = await next_event(client, "diagnostics", undefined_named, DIAGNOSTICS_TIMEOUT)
    assert again["file"] == "pkg/bad.py"
    new_pid = manager.servers[0].pid
    assert new_pid not in (None, pid)

    await service.sources.stopService()
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)


@pytest_twisted.ensureDeferred
async def test_a_server_that_keeps_crashing_is_given_up_with_an_event(tmp_path: Path) -> None:
    """
    A language server that exits at once is restarted with backoff a
    bounded number of times, then given up with a failed event; a missing
    command fails at once with a clear reason.
    """
    publisher = RecordingPublisher()
    EventBroadcaster(publisher)
    crashing = parse_lsp_option(f"python={sys.executable} -c 'raise SystemExit(3)'")
    missing = parse_lsp_option("go=no-such-language-server-here")
    manager = LanguageServerManager(
        make_source_context(str(tmp_path), name="lsp", publisher=publisher, reactor=reactor),
        [crashing, missing],
        max_restarts=2,
        backoff=(0.01,),
    )

    def lifecycle() -> list[Any]:
        return [data for channel, data in publisher.published if channel == "lsp"]

    manager.startService()
    try:
        (tmp_path / "x.py").write_text("x = 1\n")
        (tmp_path / "main.go").write_text("package main\n")
        manager.file_changes.changed("x.py", "add")
        manager.file_changes.changed("main.go", "add")
        await until(lambda: sum(e["type"] == "failed" for e in lifecycle()) == 2, 10.0)
        assert manager.servers[0].status()["state"] == "failed"
    finally:
        await manager.stopService()
    python = [e for e in lifecycle() if e["language"] == "python"]
    assert [e["type"] for e in python] == ["restarting", "restarting", "failed"]
    assert python[-1]["reason"].startswith("exited with code 3")
    [go] = [e for e in lifecycle() if e["language"] == "go"]
    assert go["reason"] == "command not found: no-such-language-server-here"


def test_plugin_is_discovered_and_takes_lsp_options() -> None:
    """
    The lsp plugin is found in cluso_plugins, and --lsp on the command line
    reaches it as parsed configs, several separated by ';'; a bad value is
    a usage error.
    """
    assert "lsp" in discover_sources().names
    options = Options()
    options.parseOptions(["--lsp", "python=pylsp --check-parent-process;go=gopls"])
    configs = configured(options["config"].source_options["lsp"]["lsp"])
    assert [(c.language, c.command) for c in configs] == [
        ("python", ("pylsp", "--check-parent-process")),
        ("go", ("gopls",)),
    ]
    with pytest.raises(usage.UsageError, match="unknown language"):
        Options().parseOptions(["--lsp", "cobol=cobol-ls"])


@pytest_twisted.ensureDeferred
async def test_touch_applies_the_files_api_rules(lsp_server: Any) -> None:
    """
    C{POST /api/lsp/touch} refuses what the files API refuses, with a 400
    saying why: blocked names (C{.git/config}, C{.env}), paths leaving the
    root, a missing file, NUL; nothing of a blocked file reaches a server.
    """
    service, root, url, _ = lsp_server
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    cases = [
        ({"file": ".env"}, "sensitive directory blocked"),
        ({"file": ".git/config"}, "sensitive directory blocked"),
        ({"file": "../outside.py"}, "Path traversal detected"),
        ({}, "Missing required field: file"),
        ({"file": "a\u0000.py"}, "control character"),
    ]
    for body, message in cases:
        response = await treq.post(url + "api/lsp/touch", json.dumps(body).encode())
        answer = json.loads(await response.content())
        assert response.code == 400, body
        assert message in answer["error"], (body, answer)
    response = await treq.post(url + "api/lsp/touch", b'{"file": "\\ud800.py"}')
    assert response.code == 400
    await response.content()
    manager = manager_of(service)
    assert manager.read_text(".env") is None
    assert all(server.state == "idle" for server in manager.servers)


def test_default_servers_are_found_beside_python_and_missing_ones_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A default server installed beside this Python is used even when that
    directory is not on PATH (an environment used without activating it);
    those installed nowhere are listed with how to install them.
    """
    from cluso_router.sources.lsp import config

    beside = tmp_path / "venv-bin"
    beside.mkdir()
    gopls = beside / "gopls"
    gopls.write_text("#!/bin/sh\n")
    gopls.chmod(0o755)
    monkeypatch.setattr(config, "python_scripts_dirs", lambda: [str(beside)])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    assert [c.language for c in config.default_configs()] == ["go"]
    assert config.missing_defaults() == [
        {"language": "python", "command": "pylsp", "install": "pip install 'cluso-router[python]'"},
        {
            "language": "typescript",
            "command": "typescript-language-server",
            "install": "npm install -g typescript-language-server typescript",
        },
        {
            "language": "rust",
            "command": "rust-analyzer",
            "install": "rustup component add rust-analyzer",
        },
    ]
