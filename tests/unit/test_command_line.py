"""
The command line's own errors, version and usage: every refusal names the
option it is about, in one line, before anything starts.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.error import CannotListenError
from twisted.python import usage

from cluso_router import __version__
from cluso_router.__main__ import CommandOptions, program_name
from cluso_router.config import ServerConfig, check_listen
from cluso_router.service import cannot_listen
from cluso_router.tap import Options, versions


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-limit", "abc"], "--rate-limit: expected a number, not 'abc'"),
        (["--max-body", "1.5"], "--max-body: expected a whole number, not '1.5'"),
        (["--sources", "git", "--git-delay", "soon"], "--git-delay: expected a number, not 'soon'"),
        (
            ["--search-engine", "grep"],
            "--search-engine: must be auto, ripgrep, python or the path of an rg executable",
        ),
        (["--listen", "bogus"], "--listen 'bogus' is not a Twisted server endpoint"),
        (["--ping-interval", "0"], "ping interval must be positive"),
    ],
)
def test_bad_values_are_refused_naming_the_option(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    """
    A value an option cannot take, whether the server's own or a source's,
    is a usage error that says which option and what it expects.
    """
    with pytest.raises(usage.UsageError) as raised:
        Options().parseOptions(["--root", str(tmp_path), *argv])
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("listen", "reason", "example"),
    [
        ("tcp", "missing or unknown parameters", "tcp:3000:interface=127.0.0.1"),
        ("tcp:abc", "invalid literal for int()", "tcp:3000:interface=127.0.0.1"),
        ("tcp:3000:colour=red", "missing or unknown parameters", "tcp:3000:interface"),
        ("3001", "Unknown endpoint type: '3001'", "tcp:3001:interface=127.0.0.1"),
        ("ssl:3000:privateKey=/nonexistent.pem", "No such file or directory", "tcp:"),
    ],
)
def test_listen_strings_are_checked_before_starting(listen: str, reason: str, example: str) -> None:
    """
    An endpoint string Twisted cannot use is refused with the reason and
    a good string (a bare port number gets its own).
    """
    with pytest.raises(ValueError, match="--listen") as raised:
        check_listen(listen)
    assert reason in str(raised.value)
    assert f"for example --listen {example}" in str(raised.value)
    check_listen("tcp:0:interface=127.0.0.1")
    check_listen("unix:/tmp/cluso.sock")


def test_a_missing_root_is_named(tmp_path: Path) -> None:
    """
    A C{--root} that does not exist, or is a file, says so.
    """
    with pytest.raises(ValueError, match=r"--root .*: no such directory"):
        ServerConfig(root=str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--root .*: not a directory"):
        ServerConfig(root=str(tmp_path / "file"))


@pytest.mark.parametrize(
    ("interface", "port", "code", "expected"),
    [
        (
            "127.0.0.1",
            3000,
            errno.EADDRINUSE,
            "cannot listen on 127.0.0.1:3000: the address is already in use (is another "
            "server running there?); choose another address with --listen, e.g. "
            "--listen tcp:3001:interface=127.0.0.1",
        ),
        (
            "",
            80,
            errno.EACCES,
            "cannot listen on port 80 (every interface): permission denied (ports below "
            "1024 need privileges); choose another address with --listen, e.g. "
            "--listen tcp:81:interface=127.0.0.1",
        ),
        (
            "::1",
            3000,
            errno.EADDRNOTAVAIL,
            "cannot listen on [::1]:3000: Cannot assign requested address; choose another "
            "address with --listen, e.g. --listen tcp:3001:interface=127.0.0.1",
        ),
    ],
)
def test_a_port_that_cannot_be_taken_is_explained(
    interface: str, port: int, code: int, expected: str
) -> None:
    """
    Failing to listen is told in one line: the address, why, and how to
    choose another.
    """
    error = CannotListenError(interface, port, OSError(code, os.strerror(code)))
    assert cannot_listen(error) == expected


def test_version_and_usage_name_the_project(tmp_path: Path) -> None:
    """
    C{--version} prints cluso-router's version first, then Twisted's and
    Autobahn's; the command's usage line names how it was started.
    """
    import autobahn
    import twisted

    text = versions()
    assert text.startswith(f"cluso-router {__version__}\n")
    assert f"Twisted {twisted.__version__}" in text
    assert f"Autobahn {autobahn.__version__}" in text
    with pytest.raises(SystemExit) as exited:
        Options().parseOptions(["--version"])
    assert exited.value.code == 0
    assert program_name("/venv/bin/cluso") == "cluso"
    assert program_name("/src/cluso_router/__main__.py") == "python -m cluso_router"
    options = CommandOptions()
    options.synopsis = "Usage: cluso [options]"
    assert str(options).startswith("Usage: cluso [options]\nOptions:\n")
    assert "--logfile=" in str(options)
    options.parseOptions(["--root", str(tmp_path), "--logfile", "server.log"])
    assert options["logfile"] == "server.log"
