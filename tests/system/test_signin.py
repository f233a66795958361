"""
Signing in across restarts, against the real C{twistd cluso}: the
per-user token kept in the state directory, the session cookie that dies
with the server, and the files the server creates for its user only.
"""

from __future__ import annotations

import http.client as httplib
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from support.servers import (
    ChildServer,
    python_tool,
    start_child_server,
    stop_child_server,
    twistd_cluso,
)

from cluso_router.tokenstore import token_path


def start(root: Path, *options: str, port: int = 0) -> ChildServer:
    return start_child_server(
        twistd_cluso("--sources", "", *options, listen=f"tcp:{port}:interface=127.0.0.1"),
        cwd=root,
        auth=True,
    )


def get(child: ChildServer, path: str, headers: dict[str, str]) -> httplib.HTTPResponse:
    connection = httplib.HTTPConnection("127.0.0.1", child.port, timeout=5)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    A fresh C{XDG_STATE_HOME} for this test's servers, and no token in the
    environment.
    """
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.delenv("CLUSO_TOKEN", raising=False)
    return state


def test_the_token_survives_restarts_until_rotated(tmp_path: Path, state_home: Path) -> None:
    """
    Without a token given, the first start makes one and keeps it in
    C{$XDG_STATE_HOME/cluso-router/token} (mode 0600, directory 0700); the
    next start uses the same one; C{--rotate-token} replaces it; C{--token}
    wins over it and leaves it alone. The start block names the file.
    """
    root = tmp_path / "root"
    root.mkdir()
    kept = state_home / "cluso-router" / "token"
    assert token_path() == kept

    first = start(root)
    stop_child_server(first)
    assert first.token is not None
    assert kept.read_text().strip() == first.token
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert f"The token is kept in {kept}" in "".join(first.log)

    second = start(root)
    stop_child_server(second)
    assert second.token == first.token

    rotated = start(root, "--rotate-token")
    stop_child_server(rotated)
    assert rotated.token not in (None, first.token)
    assert kept.read_text().strip() == rotated.token

    given = start(root, "--token", "given-token-123456")
    stop_child_server(given)
    assert given.token == "given-token-123456"
    assert kept.read_text().strip() == rotated.token


def test_a_token_file_readable_by_others_is_made_private(tmp_path: Path, state_home: Path) -> None:
    """
    A kept token whose file others could read is used, and the file is
    made 0600 again; an unusable one stops the start with a message that
    names the file and the way out.
    """
    kept = state_home / "cluso-router" / "token"
    kept.parent.mkdir(parents=True)
    kept.write_text("kept-token-abcdefgh\n")
    kept.chmod(0o644)
    root = tmp_path / "root"
    root.mkdir()
    child = start(root)
    stop_child_server(child)
    assert child.token == "kept-token-abcdefgh"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    kept.write_text("short\n")
    result = subprocess.run(
        twistd_cluso("--sources", ""), cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert f"the token in {kept} is unusable" in result.stdout + result.stderr
    assert "--rotate-token" in result.stdout + result.stderr


def test_options_that_contradict_rotation_are_refused(tmp_path: Path, state_home: Path) -> None:
    """
    C{--rotate-token} only makes sense for the kept token.
    """
    for options in (["--token", "given-token-123456"], ["--auth", "none"]):
        result = subprocess.run(
            twistd_cluso("--sources", "", "--rotate-token", *options),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "--rotate-token" in result.stdout + result.stderr
    assert not (state_home / "cluso-router" / "token").exists()


def test_a_session_cookie_dies_with_the_server(tmp_path: Path, state_home: Path) -> None:
    """
    The cookie a C{?token=} sign-in sets works while its server runs; the
    same server restarted on the same port, with the same token, refuses
    it: sessions are revoked at shutdown, and the cookie never held the
    token. The token itself still works.
    """
    root = tmp_path / "root"
    root.mkdir()
    child = start(root)
    port = child.port
    assert child.token is not None
    signed_in = get(child, f"/?token={child.token}", {})
    assert signed_in.status == 302
    cookie = signed_in.getheader("set-cookie").split(";", 1)[0]
    assert child.token not in cookie
    assert get(child, "/api/health", {"Cookie": cookie}).status == 200
    stop_child_server(child)

    again = start(root, port=port)
    try:
        assert again.token == child.token
        assert get(again, "/api/health", {"Cookie": cookie}).status == 401
        bearer = {"Authorization": f"Bearer {again.token}"}
        assert get(again, "/api/health", bearer).status == 200
    finally:
        stop_child_server(again)


def test_log_files_the_server_creates_are_private(tmp_path: Path, state_home: Path) -> None:
    """
    C{twistd --logfile} (the file that holds the sign-in URL) is created
    mode 0600, and so is the file it rotates to on C{SIGUSR1}; a log file
    left readable by an older run is made 0600.
    """
    log = tmp_path / "cluso.log"
    log.write_text("an older run\n")
    log.chmod(0o644)
    root = tmp_path / "root"
    root.mkdir()
    process = subprocess.Popen(
        [
            python_tool("twistd"),
            "--pidfile=",
            "-n",
            f"--logfile={log}",
            "cluso",
            "--sources",
            "",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "#token=" in log.read_text(), "the sign-in block in the log file")
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        process.send_signal(signal.SIGUSR1)
        rotated = log.with_name("cluso.log.1")
        wait_for(rotated.exists, "the rotated log file")
        wait_for(log.exists, "the new log file")
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert stat.S_IMODE(rotated.stat().st_mode) == 0o600
    finally:
        process.terminate()
        process.wait(10)


def wait_for(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_unix_socket_is_its_owners_only(tmp_path: Path) -> None:
    """
    C{--listen unix:PATH} makes a socket only its owner can connect to;
    C{mode=} in the endpoint string still sets another mode.
    """
    for listen, mode in (
        (f"unix:{tmp_path}/a.sock", 0o600),
        (f"unix:{tmp_path}/b.sock:mode=660", 0o660),
    ):
        path = Path(listen.split(":")[1])
        process = subprocess.Popen(
            [
                python_tool("twistd"),
                "--pidfile=",
                "-n",
                "cluso",
                "--sources",
                "",
                "--listen",
                listen,
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "CLUSO_TOKEN"},
        )
        try:
            wait_for(path.exists, f"the socket {path}")
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == mode, listen
        finally:
            process.terminate()
            process.wait(10)
