"""
C{--workers N}: several server processes behind one port.

One Python process runs one reactor on one core. The supervisor reserves
the address, then starts N copies of the server with the same options,
each listening on that port with C{SO_REUSEPORT} (the kernel spreads new
connections over them) and sharing channels through the Redis backplane,
so a client on any worker gets every event once. It restarts a worker
that dies (with a growing delay when it keeps dying), and on stop it
stops them all: each closes its sessions with 1001 and exits, and the
supervisor's C{stopService} fires once the last has ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReadDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cluso_router._reuseport import ReusePortEndpoint, reuse_port_socket
from cluso_router.service import CannotListen, cannot_listen

#: A worker that ran at least this long was healthy: restart it at once.
HEALTHY_SECONDS: Final = 10.0
#: Seconds a stopping worker gets to close its sessions before it is killed.
STOP_TIMEOUT: Final = 15.0


@implementer(IReadDescriptor)
class _SupervisorWatch:
    """
    A worker's end of the pipe on its standard input: when the supervisor
    is gone (its end closed), the worker stops.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Failure | None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        return None if data else Failure(ConnectionDone())

    def connectionLost(self, reason: Failure) -> None:
        self.reactor.removeReader(self)
        if self.reactor.running:
            Logger().warn("The supervisor is gone; stopping this worker")
            self.reactor.stop()

    def logPrefix(self) -> str:
        return "supervisor"


def become_worker(reactor: Any) -> None:
    """
    Run as one of a supervisor's workers: in a process group of its own
    (a Ctrl-C or a signal to the supervisor's group reaches the
    supervisor, which stops each worker once), and stopping when the
    supervisor goes away without a word.
    """
    os.setpgrp()
    os.set_blocking(0, False)
    reactor.addReader(_SupervisorWatch(reactor))


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred[None] = Deferred()
        self.started_at = 0.0

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor.worker_ended(self, reason)


class WorkerSupervisor(Service):
    """
    Runs C{count} server processes sharing C{endpoint}'s port.

    @param arguments: the server's own command-line arguments; each worker
        gets them, then C{--workers=1 --reuse-port --listen=<the port>}
        (later options win).
    """

    log = Logger()
    name = "workers"

    def __init__(
        self,
        arguments: Sequence[str],
        count: int,
        endpoint: ReusePortEndpoint,
        reactor: Any,
        executable: str = sys.executable,
        sign_in: Callable[[str], str] | None = None,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        self.arguments = [a for a in arguments if a != "--rotate-token"]
        self.count = count
        self.endpoint = endpoint
        self.reactor = reactor
        self.executable = executable
        self.sign_in = sign_in
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.port = endpoint.port
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        self._delays: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}
        self._reserved: socket.socket | None = None

    def privilegedStartService(self) -> None:
        """
        Reserve the address (a socket bound with C{SO_REUSEPORT}, never
        listening): a port in use fails here, in one line, and port 0
        becomes the one port all workers share.
        """
        super().privilegedStartService()
        endpoint = self.endpoint
        try:
            self._reserved = reuse_port_socket(endpoint.family, endpoint.interface, endpoint.port)
        except CannotListenError as e:
            raise CannotListen(cannot_listen(e, "--listen")) from None
        self.port = self._reserved.getsockname()[1]

    def listen_description(self) -> str:
        interface = self.endpoint.interface.replace(":", "\\:")
        kind = "tcp6" if self.endpoint.family == socket.AF_INET6 else "tcp"
        return f"{kind}:{self.port}:interface={interface}:backlog={self.endpoint.backlog}"

    def command(self, index: int) -> list[str]:
        return [
            self.executable,
            "-m",
            "cluso_router",
            *self.arguments,
            "--workers=1",
            "--reuse-port",
            f"--listen={self.listen_description()}",
        ]

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "Starting {count} workers on port {port}",
            count=self.count,
            port=self.port,
        )
        for index in range(self.count):
            self._spawn(index)
        if self.sign_in is not None:
            host = self.endpoint.interface
            if host in ("0.0.0.0", "::", ""):
                host = "localhost"
            elif ":" in host:
                host = f"[{host}]"
            self.log.info("{banner}", banner=self.sign_in(f"http://{host}:{self.port}/"))

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        worker = _Worker(self, index)
        worker.started_at = self.reactor.seconds()
        environment = {**os.environ, "CLUSO_WORKER": f"{index + 1}/{self.count}"}
        self.workers[index] = worker
        self.reactor.spawnProcess(
            worker,
            self.executable,
            self.command(index),
            env=environment,
            childFDs={0: "w", 1: 1, 2: 2},
        )

    def worker_ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if not self.running:
            return
        ran = self.reactor.seconds() - worker.started_at
        if ran >= HEALTHY_SECONDS:
            delay = 0.0
            self._delays.pop(worker.index, None)
        else:
            delay = self._delays.get(worker.index, self.restart_delay / 2) * 2
            delay = min(delay, self.max_restart_delay)
            self._delays[worker.index] = delay
        self.restarts += 1
        self.log.warn(
            "Worker {number} of {count} ended after {ran:.1f} s ({reason}); "
            "starting it again in {delay:.1f} s",
            number=worker.index + 1,
            count=self.count,
            ran=ran,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self._pending[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker (SIGTERM: each closes its sessions with 1001,
        SIGKILL after L{STOP_TIMEOUT}); fires once all have ended.
        """
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        endings = [self._stop(worker) for worker in list(self.workers.values())]
        if not endings:
            return succeed(None)
        done: Deferred[None] = Deferred()
        remaining = [len(endings)]

        def one_ended(_: object) -> None:
            remaining[0] -= 1
            if not remaining[0]:
                done.callback(None)

        for ending in endings:
            ending.addCallback(one_ended)
        return done

    def _stop(self, worker: _Worker) -> Deferred[None]:
        transport: IProcessTransport | None = worker.transport
        if transport is None or worker.ended.called:
            return succeed(None)
        self._signal(transport, signal.SIGTERM)
        kill = self.reactor.callLater(STOP_TIMEOUT, self._signal, transport, signal.SIGKILL)

        def ended(_: object) -> None:
            if kill.active():
                kill.cancel()

        worker.ended.addCallback(ended)
        return worker.ended

    @staticmethod
    def _signal(transport: IProcessTransport, number: int) -> None:
        with contextlib.suppress(ProcessExitedAlready):
            transport.signalProcess(number)
