"""
The --workers supervisor on a fake reactor: the command each worker runs,
restarts with a growing delay, and a stop that waits for every worker;
and the options --workers needs.
"""

from __future__ import annotations

import signal
import socket
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure

from cluso_router._reuseport import ReusePortEndpoint, reuse_port_endpoint
from cluso_router.service import CannotListen
from cluso_router.tap import Options
from cluso_router.workers import HEALTHY_SECONDS, STOP_TIMEOUT, WorkerSupervisor


class FakeProcess:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)

    def end(self, code: int = 0) -> None:
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(code)
        self.protocol.processEnded(Failure(reason))


class ProcessReactor(Clock):
    """
    A clock that records the processes spawned instead of running them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[FakeProcess, list[str], dict[str, str], Any]] = []

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], env: Any, childFDs: Any
    ) -> FakeProcess:
        process = FakeProcess(protocol)
        protocol.makeConnection(process)
        self.spawned.append((process, args, env, childFDs))
        return process


def supervisor(count: int = 2) -> tuple[WorkerSupervisor, ProcessReactor]:
    reactor = ProcessReactor()
    endpoint = ReusePortEndpoint(reactor, socket.AF_INET, "127.0.0.1", 0, 128)
    workers = WorkerSupervisor(
        ["--redis", "redis://127.0.0.1/0", "--rotate-token", "--workers", "3"],
        count,
        endpoint,
        reactor,
        executable="/usr/bin/python3",
    )
    workers.privilegedStartService()
    workers.startService()
    return workers, reactor


def test_each_worker_runs_the_server_on_the_reserved_port() -> None:
    """
    Each worker runs the server with the supervisor's arguments (without
    --rotate-token, which would give each its own token), one worker, the
    shared port (port 0 became one real port) with SO_REUSEPORT, and its
    number in CLUSO_WORKER; its standard input is a pipe from the
    supervisor, its output the supervisor's own.
    """
    workers, reactor = supervisor()
    assert workers.port != 0
    assert len(reactor.spawned) == 2
    _, args, env, fds = reactor.spawned[1]
    assert args == [
        "/usr/bin/python3",
        "-m",
        "cluso_router",
        "--redis",
        "redis://127.0.0.1/0",
        "--workers",
        "3",
        "--workers=1",
        "--reuse-port",
        f"--listen=tcp:{workers.port}:interface=127.0.0.1:backlog=128",
    ]
    assert env["CLUSO_WORKER"] == "2/2"
    assert fds == {0: "w", 1: 1, 2: 2}
    for process, *_ in reactor.spawned:
        process.end()
    workers.stopService()


def test_a_dying_worker_is_restarted_later_each_time_and_at_once_when_it_was_healthy() -> None:
    """
    A worker that dies soon after it started is started again after 1, 2,
    then 4 seconds; one that ran for a while is started again at once.
    """
    workers, reactor = supervisor(count=1)

    def current() -> FakeProcess:
        return reactor.spawned[-1][0]

    for delay in (1.0, 2.0, 4.0):
        current().end(1)
        spawned = len(reactor.spawned)
        reactor.advance(delay - 0.01)
        assert len(reactor.spawned) == spawned
        reactor.advance(0.01)
        assert len(reactor.spawned) == spawned + 1
    reactor.advance(HEALTHY_SECONDS)
    current().end(1)
    reactor.advance(0)
    assert len(reactor.spawned) == 5
    assert workers.restarts == 4
    current().end()
    workers.stopService()


def test_stopping_waits_for_every_worker_and_kills_a_stuck_one() -> None:
    """
    Stopping sends each worker SIGTERM and fires only when all have ended;
    a worker still running after the stop timeout gets SIGKILL. Nothing
    is restarted while stopping.
    """
    workers, reactor = supervisor()
    (first, *_), (second, *_) = reactor.spawned
    stopped = workers.stopService()
    assert first.signals == [signal.SIGTERM]
    assert second.signals == [signal.SIGTERM]
    first.end()
    assert not stopped.called
    reactor.advance(STOP_TIMEOUT)
    assert second.signals == [signal.SIGTERM, signal.SIGKILL]
    second.end(-9)
    assert stopped.called
    assert len(reactor.spawned) == 2


def test_a_taken_port_is_refused_in_one_line() -> None:
    """
    A port another process listens on without sharing it fails the start
    with the one-line message that names the option.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reactor = ProcessReactor()
        workers = WorkerSupervisor(
            [], 2, ReusePortEndpoint(reactor, socket.AF_INET, "127.0.0.1", port), reactor
        )
        with pytest.raises(CannotListen, match="--listen"):
            workers.privilegedStartService()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "2"], "--workers needs --redis"),
        (["--workers", "0"], "at least 1"),
        (
            ["--workers", "2", "--redis", "redis://127.0.0.1/0", "--listen", "unix:/tmp/s"],
            "needs a tcp: --listen address",
        ),
        (
            [
                "--workers",
                "2",
                "--redis",
                "redis://127.0.0.1/0",
                "--listen-rawsocket",
                "tcp:0",
            ],
            "--listen-rawsocket",
        ),
    ],
)
def test_options_workers_need(arguments: list[str], message: str, tmp_path: Any) -> None:
    """
    --workers is refused, saying why, without Redis to share channels
    through, with a listening address that is not TCP, beside a RawSocket
    listener, or below 1.
    """
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--root", str(tmp_path), "--auth", "none", *arguments])


def test_reuse_port_endpoints_are_made_only_from_tcp_descriptions() -> None:
    """
    tcp: and tcp6: descriptions keep their port, interface and backlog.
    """
    endpoint = reuse_port_endpoint(Clock(), "tcp:3000:interface=127.0.0.1:backlog=1024")
    assert (endpoint.family, endpoint.interface, endpoint.port, endpoint.backlog) == (
        socket.AF_INET,
        "127.0.0.1",
        3000,
        1024,
    )
    six = reuse_port_endpoint(Clock(), "tcp6:3000:interface=\\:\\:1")
    assert (six.family, six.interface) == (socket.AF_INET6, "::1")
