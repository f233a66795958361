"""
Validation: real ruff on files with and without a lint error, results as a
WebSocket client receives them on the C{validation} channel; runs after
file changes (debounced on an injected clock); missing, crashing and
hanging tools; configuration and output parsing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from support.servers import python_tool
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from cluso_router.config import ServerConfig
from cluso_router.service import ClusoService
from cluso_router.sources.validation.service import ToolQueue, ValidationService
from cluso_router.sources.validation.validators import (
    ConfigError,
    Validator,
    detect,
    load,
    load_server_config,
    parse_eslint,
    parse_mypy,
    parse_tsc,
)
from cluso_router.testing import WebSocketTestClient, connect_client
from cluso_router.workspace.ledger import FileChangeLedger

BAD = "import os\n\n\ndef f() -> int:\n    return 1\n"
GOOD = "def f() -> int:\n    return 1\n"


class Validation:
    """
    A validation source on the running test server. Unless C{real_time},
    it has its own clock (for debouncing and timeouts) and its own ledger of
    file changes, so the server's file watcher cannot disturb a test.
    """

    def __init__(self, server: Any, on_change: bool = False, real_time: bool = False) -> None:
        service = server.service
        self.server = server
        self.root = Path(service.config.root)
        self.clock = service.reactor if real_time else Clock()
        self.ledger = (
            service.file_changes
            if real_time
            else FileChangeLedger(service.broadcaster, clock=self.clock)
        )
        context = service.source_context().for_source("validation", {})
        context.file_changes = self.ledger
        self.service = ValidationService(context, on_change=on_change, clock=self.clock)

    def write(self, name: str, content: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    def serve_tools(self, content: str) -> None:
        """
        Give the server a validation configuration (outside the root).
        """
        file = self.root.parent / "server-validation.toml"
        file.write_text(content)
        self.service._config_file = str(file)


@pytest_twisted.async_yield_fixture
async def validation(server: Any) -> Any:
    python_tool("ruff")
    made: list[Validation] = []

    def start(on_change: bool = False, real_time: bool = False) -> Validation:
        made.append(Validation(server, on_change, real_time))
        return made[-1]

    yield start
    for v in made:
        await v.service.stopService()


async def subscribed(server: Any) -> WebSocketTestClient:
    client = await connect_client(server.ws_url)
    await client.next_message()
    await client.request({"type": "subscribe", "channel": "validation", "id": "s"})
    return client


async def next_validation(client: WebSocketTestClient) -> dict[str, Any]:
    while True:
        message = await client.next_message(timeout=30)
        if message.get("type") == "event":
            assert message["channel"] == "validation"
            result: dict[str, Any] = message["data"]["validation"]
            return result


@pytest_twisted.ensureDeferred
async def test_ruff_reports_a_lint_error_then_passes_once_fixed(
    validation: Callable[..., Validation],
) -> None:
    """
    validation.run runs the detected ruff: a file with an unused import
    gives a failed lint result naming file, line, column, message and rule,
    published as validation_complete; after the fix, POST /api/validate
    gives passed: true with no errors.
    """
    v = validation()
    v.write("pkg/bad.py", BAD)
    v.write("good.py", GOOD)
    v.service.startService()
    client = await subscribed(v.server)

    reply = await client.request({"type": "invoke", "id": 1, "channel": "validation.run"})
    event = await next_validation(client)

    [result] = reply["data"]
    assert result["tool"] == "ruff"
    assert result["type"] == "lint"
    assert result["passed"] is False
    assert result["errors"] == [
        {
            "file": "pkg/bad.py",
            "line": 1,
            "column": 8,
            "message": "`os` imported but unused",
            "rule": "F401",
        }
    ]
    assert event == result

    v.write("pkg/bad.py", GOOD)
    response = await treq.post(v.server.url + "api/validate", data=b'{"tool": "ruff"}')
    body = json.loads(await response.content())
    event = await next_validation(client)
    assert response.code == 200
    assert body["data"][0]["passed"] is True
    assert body["data"][0]["errors"] == []
    assert event["passed"] is True
    await client.close()


@pytest_twisted.ensureDeferred
async def test_changes_run_ruff_once_after_they_settle(
    validation: Callable[..., Validation],
) -> None:
    """
    With validate-on-change, a burst of announced changes to Python files
    starts one ruff run only once no change came for the debounce time;
    changes to files ruff does not check start nothing.
    """
    v = validation(on_change=True)
    v.write("pyproject.toml", "[tool.cluso.validation]\ndebounce = 0.3\n")
    v.write("a.py", BAD)
    v.service.startService()
    client = await subscribed(v.server)
    ledger = v.ledger
    ruff = v.service.queue("ruff")

    ledger.changed("notes.md", "change")
    v.clock.advance(1)
    assert not ruff.running

    for step in range(5):
        ledger.changed("a.py", "change")
        v.clock.advance(0.2)
        assert not ruff.running, step
    v.clock.advance(0.1)
    assert ruff.running
    assert not ruff.pending

    event = await next_validation(client)
    assert [e["rule"] for e in event["errors"]] == ["F401"]
    assert not ruff.running
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_file_saved_on_disk_is_validated_through_the_watcher(
    validation: Callable[..., Validation],
) -> None:
    """
    On the server's own ledger and clock, a Python file written on disk is
    seen by the files source's watcher, announced, and validated: ruff's
    result for it reaches the client.
    """
    v = validation(on_change=True, real_time=True)
    v.write("pyproject.toml", "[tool.cluso.validation]\ndebounce = 0.1\n")
    v.service.startService()
    sources = v.server.service.sources
    assert "files" in sources.started, f"files source not started: {sources.failed}"
    client = await subscribed(v.server)

    v.write("mod.py", BAD)
    for _ in range(5):
        event = await next_validation(client)
        if event["errors"]:
            break
    assert [(e["file"], e["rule"]) for e in event["errors"]] == [("mod.py", "F401")]
    await client.close()


def tool_config(tools: dict[str, dict[str, Any]], timeout: float = 30) -> str:
    lines = ["[validation]", f"timeout = {timeout}"]
    for name, settings in tools.items():
        lines.append(f"[validation.tools.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


@pytest_twisted.ensureDeferred
async def test_missing_crashing_and_hanging_tools_give_clear_failed_results(
    validation: Callable[..., Validation],
) -> None:
    """
    A tool that is not installed, one that exits with an unexpected code,
    and one that never finishes (stopped at its timeout) each give a failed
    result whose error names the problem; all three are published.
    """
    v = validation()
    crash = "import sys; sys.stderr.write('boom: bad settings\\n'); sys.exit(3)"
    v.write("cluso.toml", "[validation]\ndetect = false\n")
    v.serve_tools(
        tool_config(
            {
                "ghost": {
                    "command": ["no-such-validator-xyz"],
                    "type": "lint",
                    "parser": "ruff",
                },
                "crash": {
                    "command": [sys.executable, "-c", crash],
                    "type": "lint",
                    "parser": "ruff",
                },
                "hang": {
                    "command": [sys.executable, "-c", "import time; time.sleep(60)"],
                    "type": "typecheck",
                    "parser": "mypy",
                    "timeout": 5,
                },
            }
        ),
    )
    v.service.startService()
    client = await subscribed(v.server)

    running = ensureDeferred(v.service.run())
    for _ in range(500):
        if v.service.queue("hang").running:
            break
        await client_pause()
    v.clock.advance(5)
    results = {r["tool"]: r for r in await running}

    assert results["ghost"]["passed"] is False
    assert "no-such-validator-xyz is not installed" in results["ghost"]["error"]
    assert "exited with code 3: boom: bad settings" in results["crash"]["error"]
    assert results["hang"]["error"] == "hang did not finish within 5 s"
    assert results["hang"]["type"] == "typecheck"
    published = {(await next_validation(client))["tool"] for _ in range(3)}
    assert published == {"ghost", "crash", "hang"}
    await client.close()


async def client_pause() -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.01)


@pytest_twisted.ensureDeferred
async def test_bad_requests_and_configuration_are_reported(
    validation: Callable[..., Validation],
) -> None:
    """
    No validators, an unknown tool name and a broken configuration file
    are clear errors, over invoke and HTTP.
    """
    v = validation()
    v.service.startService()
    client = await subscribed(v.server)

    reply = await client.request({"type": "invoke", "id": 1, "channel": "validation.run"})
    assert reply["code"] == "no_validators"
    v.write("a.py", GOOD)
    reply = await client.request(
        {"type": "invoke", "id": 2, "channel": "validation.run", "data": {"tool": "mypy"}}
    )
    assert reply["error"] == "No validator named 'mypy' (available: ruff)"
    v.write("cluso.toml", "[validation\n")
    response = await treq.post(v.server.url + "api/validate")
    body = json.loads(await response.content())
    assert response.code == 400
    assert body["error"].startswith("Invalid validation configuration: cluso.toml:")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_plugin_runs_where_validators_apply_with_its_option(tmp_path: Path) -> None:
    """
    The validation plugin applies to a root with Python files, is started
    by the server with --validate-on-change passed through, and serves
    validation.run.
    """
    from twisted.internet import reactor

    python_tool("ruff")
    (tmp_path / "a.py").write_text(BAD)
    service = ClusoService(
        ServerConfig(
            root=str(tmp_path),
            listen="tcp:0:interface=127.0.0.1",
            auth="none",
            sources=("validation",),
            source_options={"validation": {"on-change": True}},
        ),
        reactor=reactor,
    )
    service.startService()
    try:
        source = service.sources.started["validation"]
        assert isinstance(source, ValidationService)
        assert source.on_change is True
        [result] = await service.router.call("validation.run", {"tool": "ruff"})
        assert [e["rule"] for e in result["errors"]] == ["F401"]
    finally:
        await service.stopService()


def test_tool_queue_keeps_one_run_going_and_one_waiting() -> None:
    """
    While a run is in progress, any number of requests wait for a single
    next run; requests during that one wait for a third.
    """
    runs: list[Deferred[dict[str, Any]]] = []

    def run(validator: Validator) -> Deferred[dict[str, Any]]:
        runs.append(Deferred())
        return runs[-1]

    queue = ToolQueue(run)
    tool = Validator("t", ("t",), "lint", "exitcode")
    answers: list[Any] = []
    first = queue.request(tool).addCallback(answers.append)
    waiting = [queue.request(tool) for _ in range(4)]
    assert len(runs) == 1
    assert queue.running
    assert queue.pending

    runs[0].callback({"run": 1})
    assert first.called
    assert answers == [{"run": 1}]
    assert len(runs) == 2
    assert not queue.pending
    later = queue.request(tool)
    runs[1].callback({"run": 2})
    assert [w.result for w in waiting] == [{"run": 2}] * 4
    runs[2].callback({"run": 3})
    assert later.result == {"run": 3}
    assert not queue.running


def test_defaults_are_detected_and_configuration_overrides_them(tmp_path: Path) -> None:
    """
    Python files bring ruff; a package.json naming typescript and eslint
    brings tsc --noEmit and eslint; pyproject.toml can change a default,
    drop one and add a tool, and mistakes name the file.
    """
    (tmp_path / "main.py").write_text(GOOD)
    (tmp_path / "package.json").write_text(
        json.dumps({"devDependencies": {"typescript": "^5", "eslint": "^9"}})
    )
    assert [(v.name, v.command[:2]) for v in detect(str(tmp_path))] == [
        ("ruff", ("ruff", "check")),
        ("tsc", ("tsc", "--noEmit")),
        ("eslint", ("eslint", "--format")),
    ]
    (tmp_path / "pyproject.toml").write_text(
        "[tool.cluso.validation]\ndebounce = 2\n"
        "[tool.cluso.validation.tools.ruff]\ntimeout = 9\n"
        "[tool.cluso.validation.tools.eslint]\nenabled = false\n"
        "[tool.cluso.validation.tools.mypy]\n"
        'triggers = ["*.py"]\n'
    )
    config = load(str(tmp_path))
    assert config.debounce == 2
    assert config.source == "pyproject.toml"
    assert [v.name for v in config.validators] == ["ruff", "tsc", "mypy"]
    ruff = config.named("ruff")
    assert ruff is not None
    assert ruff.timeout == 9
    assert ruff.parser == "ruff"
    mypy = config.named("mypy")
    assert mypy is not None
    assert mypy.command[0] == "mypy"
    assert mypy.triggers == ("*.py",)

    server_file = tmp_path.parent / f"{tmp_path.name}-server.toml"
    server_file.write_text('[validation.tools.x]\ncommand = ["x"]\ntype = "style"\n')
    with pytest.raises(ConfigError, match=r"-server.toml: x: type must be one of"):
        load_server_config(str(server_file), str(tmp_path))


def test_mypy_tsc_and_eslint_output_become_errors(tmp_path: Path) -> None:
    """
    mypy's and tsc's lines and eslint's JSON give the same error fields;
    notes and warnings are not errors, and a failure without errors in the
    output is reported as the tool's problem.
    """
    root = str(tmp_path)
    mypy = (
        "pkg/a.py:3:5: error: Incompatible return value type  [return-value]\n"
        "pkg/a.py:3:5: note: see docs\n"
        "b.py:7: error: Name 'y' is not defined\n"
    )
    assert parse_mypy(1, mypy, "", root) == (
        False,
        [
            {
                "file": "pkg/a.py",
                "line": 3,
                "column": 5,
                "message": "Incompatible return value type",
                "rule": "return-value",
            },
            {
                "file": "b.py",
                "line": 7,
                "column": 0,
                "message": "Name 'y' is not defined",
                "rule": None,
            },
        ],
    )
    with pytest.raises(ValueError, match="exited with code 2: mypy: can't read file"):
        parse_mypy(2, "", "mypy: can't read file 'x'\n", root)

    tsc = "src/a.ts(4,9): error TS2322: Type 'string' is not assignable to type 'number'.\n"
    passed, errors = parse_tsc(2, tsc, "", root)
    assert not passed
    assert errors == [
        {
            "file": "src/a.ts",
            "line": 4,
            "column": 9,
            "message": "Type 'string' is not assignable to type 'number'.",
            "rule": "TS2322",
        }
    ]
    assert parse_tsc(0, "", "", root) == (True, [])

    eslint = [
        {
            "filePath": f"{root}/src/a.js",
            "messages": [
                {
                    "ruleId": "no-unused-vars",
                    "severity": 2,
                    "message": "'x' unused",
                    "line": 1,
                    "column": 7,
                },
                {
                    "ruleId": "semi",
                    "severity": 1,
                    "message": "Missing semicolon",
                    "line": 2,
                    "column": 3,
                },
            ],
        }
    ]
    assert parse_eslint(1, json.dumps(eslint), "", root) == (
        False,
        [
            {
                "file": "src/a.js",
                "line": 1,
                "column": 7,
                "message": "'x' unused",
                "rule": "no-unused-vars",
            }
        ],
    )


def test_the_workspace_cannot_name_a_command(tmp_path: Path) -> None:
    """
    A workspace configuration that sets a command, a parser or a type, or
    names a tool that is neither known nor offered by the server, is
    refused: what runs comes from the server. The server's own file, outside
    the root, may add any command; inside the root it is refused.
    """
    root = tmp_path / "root"
    root.mkdir()
    (root / "cluso.toml").write_text('[validation.tools.ruff]\ncommand = ["sh", "-c", "id"]\n')
    with pytest.raises(ConfigError, match=r"cluso.toml: ruff: command can only be set in"):
        load(str(root))
    (root / "cluso.toml").write_text("[validation.tools.pwn]\ntimeout = 1\n")
    with pytest.raises(ConfigError, match=r"cluso.toml: pwn is not a known tool"):
        load(str(root))
    (root / "cluso.toml").write_text("[validation]\ndetect = false\n[validation.tools.lint]\n")
    server_file = tmp_path / "server.toml"
    server_file.write_text(
        '[validation]\npath = ["/opt/tools/bin"]\n'
        '[validation.tools.lint]\ncommand = ["mylint", "."]\ntype = "lint"\nparser = "exitcode"\n'
    )
    server = load_server_config(str(server_file), str(root))
    assert server.path == ("/opt/tools/bin",)
    [lint] = load(str(root), server).validators
    assert lint.command == ("mylint", ".")
    inside = root / "server.toml"
    inside.write_text(server_file.read_text())
    with pytest.raises(ConfigError, match="must lie outside the served root"):
        load_server_config(str(inside), str(root))


@pytest_twisted.ensureDeferred
async def test_a_command_written_through_the_api_never_runs(server: Any, tmp_path: Path) -> None:
    """
    The attack of the hardening pass: write a cluso.toml naming a command
    and a fake ruff in .venv/bin through the files API, then validate. The
    configuration is refused, and the fake tool is never run.
    """
    url = server.url
    marker = tmp_path / "pwned"
    script = f"#!/bin/sh\ntouch {marker}\n"
    for path, content in (
        ("cluso.toml", f'[validation.tools.x]\ncommand = ["sh", "-c", "touch {marker}"]\n'),
        (".venv/bin/ruff", script),
        ("a.py", "x = 1\n"),
    ):
        response = await treq.post(
            url + "api/files/write", json.dumps({"path": path, "content": content}).encode()
        )
        assert response.code == 200, path
        await response.content()
    (Path(server.service.config.root) / ".venv/bin/ruff").chmod(0o755)
    v = Validation(server)
    v.service.startService()
    try:
        with pytest.raises(Exception, match="command can only be set"):
            await ensureDeferred(v.service.run())
        (Path(server.service.config.root) / "cluso.toml").unlink()
        results = await ensureDeferred(v.service.run())
        assert [r["tool"] for r in results] == ["ruff"]
        assert not marker.exists()
    finally:
        await v.service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_missing_detected_tool_says_what_to_install(
    validation: Callable[..., Validation], tmp_path: Path
) -> None:
    """
    The validators found by detection know how they are installed; when
    one is missing, its failed result carries that with the reason.
    """
    (tmp_path / "package.json").write_text(
        json.dumps({"devDependencies": {"typescript": "5", "eslint": "9"}})
    )
    (tmp_path / "app.py").write_text(GOOD)
    hints = {v.name: v.install for v in detect(str(tmp_path))}
    assert hints == {
        "ruff": "pip install 'cluso-router[python]'",
        "tsc": "npm install --save-dev typescript",
        "eslint": "npm install --save-dev eslint",
    }

    v = validation()
    v.service.startService()
    missing = Validator(
        "ruff", ("no-such-ruff-xyz",), "lint", "ruff", install="pip install 'cluso-router[python]'"
    )
    result = await v.service.queue("ruff").request(missing)
    assert result["passed"] is False
    assert result["errors"] == []
    assert "no-such-ruff-xyz is not installed" in result["error"]
    assert result["install"] == "pip install 'cluso-router[python]'"
