"""
WAMP fan-out against Crossbar: N Autobahn-Python subscribers (JSON or
msgpack), one Autobahn publisher, and the router's CPU time per delivered
event, for cluso-router and Crossbar in the same run.

Each round starts one router as its own process (cluso-router: C{twistd
cluso}; Crossbar: a node with one router worker, event store off, the same
anonymous role with every permission and nothing disclosed) and the load:
C{--processes} subscriber processes holding the N sessions between them,
then a publisher process that publishes C{--events} events in windows of
C{--window} (each window is published once the subscribers have every
event of the previous one, so no router queues more than a window per
subscriber). The routers take turns, round after round. Reported per
router and serializer: the medians over the rounds of the router's CPU
time (user + system, from C{/proc}; Crossbar's router worker, not its
controller) per delivered event, and deliveries per second; and the ratio
of cluso-router's CPU per event to Crossbar's, with each round's own ratio.

    python bench/wamp.py                         # 50 subscribers, 20,000 events, 3 rounds
    python bench/wamp.py --quick                 # a smoke test of cluso-router alone

Crossbar is found with C{--crossbar PATH}, else in C{bench/.crossbar-venv}
or C{/tmp/crossbarvenv}; C{--install-crossbar} installs it into
C{bench/.crossbar-venv} first (about two minutes; it is never part of the
repository). The exit status is 1 when any subscriber missed, repeated or
reordered an event.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
TOPIC = "bench.wamp"
CROSSBAR_VENV = HERE / ".crossbar-venv"
CROSSBAR_CANDIDATES = (CROSSBAR_VENV / "bin" / "crossbar", Path("/tmp/crossbarvenv/bin/crossbar"))
REALM = "cluso"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} (all its threads).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


@dataclass
class Router:
    """
    A running router: its process, the pid doing the routing, its URL.
    """

    name: str
    process: subprocess.Popen[bytes]
    pid: int
    url: str
    workdir: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT if self.name == "crossbar" else signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluso(cluso_path: Path | None) -> Router:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-wamp-cluso-")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = dict(os.environ)
    if cluso_path is not None:
        env["PYTHONPATH"] = str(cluso_path)
    process = subprocess.Popen(
        [
            *(twistd, "--pidfile=", "-n", "cluso"),
            *("--listen", f"tcp:{port}:interface=127.0.0.1", "--auth", "none", "--sources", ""),
            *("--rate-limit", "0", "--max-queue-bytes", str(64 << 20)),
        ],
        cwd=workdir,
        stdout=open(os.path.join(workdir, "log"), "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_for_port(port)
    return Router("cluso", process, process.pid, f"ws://127.0.0.1:{port}/ws", workdir)


def crossbar_config(port: int) -> dict[str, Any]:
    everything = {"call": True, "register": True, "publish": True, "subscribe": True}
    return {
        "version": 2,
        "controller": {},
        "workers": [
            {
                "type": "router",
                "realms": [
                    {
                        "name": REALM,
                        "roles": [
                            {
                                "name": "anonymous",
                                "permissions": [
                                    {
                                        "uri": "",
                                        "match": "prefix",
                                        "allow": everything,
                                        "disclose": {"caller": False, "publisher": False},
                                        "cache": True,
                                    }
                                ],
                            }
                        ],
                    }
                ],
                "transports": [
                    {
                        "type": "websocket",
                        "endpoint": {
                            "type": "tcp",
                            "interface": "127.0.0.1",
                            "port": port,
                            "backlog": 1024,
                        },
                        "serializers": ["json", "msgpack"],
                        "options": {"max_message_size": 64 << 20},
                        "auth": {"anonymous": {"type": "static", "role": "anonymous"}},
                    }
                ],
            }
        ],
    }


def start_crossbar(binary: Path) -> Router:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-wamp-crossbar-")
    cbdir = Path(workdir) / ".crossbar"
    cbdir.mkdir()
    (cbdir / "config.json").write_text(json.dumps(crossbar_config(port)))
    log = open(os.path.join(workdir, "log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(binary), "start", "--cbdir", str(cbdir)],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, timeout=120)
    workers = [p for p in children(process.pid) if "crossbar" in _command(p)]
    if not workers:
        process.kill()
        raise SystemExit("Crossbar started but its router worker was not found")
    return Router("crossbar", process, workers[0], f"ws://127.0.0.1:{port}/", workdir)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def find_crossbar(given: Path | None, install: bool) -> Path | None:
    if given is not None:
        return given
    for candidate in CROSSBAR_CANDIDATES:
        if candidate.exists():
            return candidate
    if not install:
        return None
    print(f"installing Crossbar into {CROSSBAR_VENV} (a couple of minutes)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(CROSSBAR_VENV)], check=True)
    pip = str(CROSSBAR_VENV / "bin" / "pip")
    subprocess.run([pip, "install", "-q", "-U", "pip"], check=True)
    subprocess.run([pip, "install", "-q", "crossbar"], check=True)
    return CROSSBAR_VENV / "bin" / "crossbar"


# load processes (each runs its own reactor)


def _subscribers(
    url: str,
    serializer: str,
    sessions: int,
    slot: int,
    counts: Any,
    errors: Any,
    ready: Any,
    stop: Any,
) -> None:
    """
    Hold C{sessions} subscribed sessions; count their events in
    C{counts[slot]} and every missing, repeated or reordered one in
    C{errors[slot]}.
    """
    from autobahn.twisted.wamp import ApplicationRunner, ApplicationSession
    from autobahn.wamp.serializer import create_transport_serializer
    from twisted.internet import reactor, task

    joined = [0]

    class Subscriber(ApplicationSession):
        async def onJoin(self, details: Any) -> None:
            self.expected = 0

            def event(data: dict[str, Any]) -> None:
                if data["seq"] != self.expected:
                    errors[slot] += 1
                self.expected = data["seq"] + 1
                counts[slot] += 1

            await self.subscribe(event, TOPIC)
            joined[0] += 1
            if joined[0] == sessions:
                ready.set()

    for _ in range(sessions):
        runner = ApplicationRunner(
            url, REALM, serializers=[create_transport_serializer(serializer)]
        )
        runner.run(Subscriber, start_reactor=False, auto_reconnect=False)

    def check_stop() -> None:
        if stop.is_set():
            watching.stop()
            reactor.stop()  # type: ignore[attr-defined]

    watching = task.LoopingCall(check_stop)
    watching.start(0.2)
    reactor.run()  # type: ignore[attr-defined]


def _publisher(
    url: str,
    serializer: str,
    events: int,
    window: int,
    subscribers: int,
    counts: Any,
    joined: Any,
    go: Any,
    done: Any,
) -> None:
    """
    Join, say so (C{joined}), wait for C{go}, then publish C{events} events
    in windows of C{window}: the next window once every subscriber has every
    event published so far.
    """
    from autobahn.twisted.wamp import ApplicationRunner, ApplicationSession
    from autobahn.wamp.serializer import create_transport_serializer
    from autobahn.wamp.types import PublishOptions
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    class Publisher(ApplicationSession):
        async def onJoin(self, details: Any) -> None:
            joined.set()
            while not go.is_set():
                await deferLater(reactor, 0.001, lambda: None)
            sent = 0
            while sent < events:
                batch = min(window, events - sent)
                for n in range(sent, sent + batch - 1):
                    self.publish(TOPIC, {"file": "src/app.py", "event": "change", "seq": n})
                await self.publish(
                    TOPIC,
                    {"file": "src/app.py", "event": "change", "seq": sent + batch - 1},
                    options=PublishOptions(acknowledge=True),
                )
                sent += batch
                while sum(counts) < sent * subscribers:
                    await deferLater(reactor, 0.0005, lambda: None)
            done.set()
            self.leave()

        def onDisconnect(self) -> None:
            reactor.stop()  # type: ignore[attr-defined]

    runner = ApplicationRunner(url, REALM, serializers=[create_transport_serializer(serializer)])
    runner.run(Publisher, start_reactor=False, auto_reconnect=False)
    reactor.run()  # type: ignore[attr-defined]


@dataclass
class Run:
    router: str
    serializer: str
    subscribers: int
    events: int
    cpu_seconds: float
    seconds: float
    errors: int
    deliveries: int
    rounds: list[int] = field(default_factory=list)

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.deliveries * 1e6

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.seconds


def measure(router: Router, serializer: str, args: argparse.Namespace) -> Run:
    context = mp.get_context("spawn")
    processes = max(1, min(args.processes, args.subscribers))
    counts = context.RawArray("q", processes)
    errors = context.RawArray("q", processes)
    stop = context.Event()
    share = [
        args.subscribers // processes + (1 if i < args.subscribers % processes else 0)
        for i in range(processes)
    ]
    workers = []
    for slot, sessions in enumerate(share):
        ready = context.Event()
        worker = context.Process(
            target=_subscribers,
            args=(router.url, serializer, sessions, slot, counts, errors, ready, stop),
            daemon=True,
        )
        worker.start()
        if not ready.wait(120):
            raise SystemExit(f"subscribers did not join {router.name}")
        workers.append(worker)
    joined, go, done = context.Event(), context.Event(), context.Event()
    publisher = context.Process(
        target=_publisher,
        args=(
            router.url,
            serializer,
            args.events,
            args.window,
            args.subscribers,
            counts,
            joined,
            go,
            done,
        ),
        daemon=True,
    )
    publisher.start()
    if not joined.wait(120):
        raise SystemExit(f"the publisher did not join {router.name}")
    before = cpu_seconds(router.pid)
    started = time.perf_counter()
    go.set()
    if not done.wait(args.timeout):
        raise SystemExit(f"{router.name} ({serializer}) did not deliver everything in time")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(router.pid) - before
    stop.set()
    for process in (publisher, *workers):
        process.join(10)
        if process.is_alive():
            process.kill()
    deliveries = sum(counts)
    return Run(
        router.name,
        serializer,
        args.subscribers,
        args.events,
        cpu,
        seconds,
        sum(errors) + (args.events * args.subscribers - deliveries),
        deliveries,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WAMP fan-out: cluso-router against Crossbar")
    parser.add_argument("--quick", action="store_true", help="small numbers, one round (CI)")
    parser.add_argument("--subscribers", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--processes", type=int, default=2, help="subscriber processes")
    parser.add_argument("--serializers", default="json,msgpack")
    parser.add_argument("--routers", default=None, help="cluso,crossbar (quick: cluso)")
    parser.add_argument("--crossbar", type=Path, help="the crossbar executable")
    parser.add_argument("--install-crossbar", action="store_true")
    parser.add_argument("--cluso-path", type=Path, help="run cluso-router from this source tree")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    args = parser.parse_args(argv)
    args.subscribers = args.subscribers or (4 if args.quick else 50)
    args.events = args.events or (300 if args.quick else 20_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    routers = (args.routers or ("cluso" if args.quick else "cluso,crossbar")).split(",")
    serializers = args.serializers.split(",")
    crossbar = None
    if "crossbar" in routers:
        crossbar = find_crossbar(args.crossbar, args.install_crossbar)
        if crossbar is None:
            raise SystemExit(
                "Crossbar is not installed: give --crossbar PATH or --install-crossbar"
            )
    runs: list[Run] = []
    for round_number in range(args.rounds):
        order = routers if round_number % 2 == 0 else list(reversed(routers))
        for name in order:
            router = (
                start_crossbar(crossbar) if name == "crossbar" else start_cluso(args.cluso_path)
            )  # type: ignore[arg-type]
            try:
                for serializer in serializers:
                    run = measure(router, serializer, args)
                    run.rounds.append(round_number)
                    runs.append(run)
                    print(
                        f"round {round_number + 1} {name:8} {serializer:8} "
                        f"{run.cpu_us_per_event:6.2f} µs CPU/event  "
                        f"{run.deliveries_per_second:9.0f} deliveries/s  errors {run.errors}",
                        flush=True,
                    )
            finally:
                router.stop()
    summary = summarize(runs, routers, serializers)
    print_summary(summary, args)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "plan": {
                        "subscribers": args.subscribers,
                        "events": args.events,
                        "window": args.window,
                        "rounds": args.rounds,
                        "processes": args.processes,
                    },
                    "runs": [
                        {**run.__dict__, "cpu_us_per_event": run.cpu_us_per_event} for run in runs
                    ],
                    "summary": summary,
                },
                indent=2,
            )
        )
    return 1 if any(run.errors for run in runs) else 0


def summarize(runs: list[Run], routers: list[str], serializers: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for serializer in serializers:
        entry: dict[str, Any] = {}
        for name in routers:
            mine = [r for r in runs if r.router == name and r.serializer == serializer]
            entry[name] = {
                "cpu_us_per_event": statistics.median(r.cpu_us_per_event for r in mine),
                "deliveries_per_second": statistics.median(r.deliveries_per_second for r in mine),
                "rounds": [round(r.cpu_us_per_event, 2) for r in mine],
            }
        if "cluso" in entry and "crossbar" in entry:
            cluso = [r for r in runs if r.router == "cluso" and r.serializer == serializer]
            crossbar = [r for r in runs if r.router == "crossbar" and r.serializer == serializer]
            entry["ratio"] = (
                entry["cluso"]["cpu_us_per_event"] / entry["crossbar"]["cpu_us_per_event"]
            )
            entry["round_ratios"] = [
                round(a.cpu_us_per_event / b.cpu_us_per_event, 3)
                for a, b in zip(cluso, crossbar, strict=False)
            ]
        summary[serializer] = entry
    return summary


def print_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\n{args.subscribers} subscribers, {args.events} events, window {args.window}, "
        f"{args.rounds} round(s); medians"
    )
    for serializer, entry in summary.items():
        for name in ("cluso", "crossbar"):
            if name in entry:
                e = entry[name]
                print(
                    f"  {serializer:8} {name:8} {e['cpu_us_per_event']:6.2f} µs CPU/event "
                    f"{e['deliveries_per_second']:9.0f} deliveries/s  rounds {e['rounds']}"
                )
        if "ratio" in entry:
            print(
                f"  {serializer:8} cluso/crossbar CPU per event {entry['ratio']:.3f} "
                f"(rounds {entry['round_ratios']})"
            )


if __name__ == "__main__":
    sys.exit(main())
