"""
Scale benchmark: idle connections by the ten thousand.

(a) One process: cluso-router and the Node C{ws} baseline each hold
C{--connections} (default 18,000) idle subscribed connections, opened by
several load-client processes (C{bench/scaleclient.js}, each under the
per-process descriptor limit, each from its own loopback source address).
Per server: the time to open them all, RSS per idle connection, the time
from one publish to the last of the receipts (five broadcasts, median and
worst, with the server's CPU time over each), and for cluso-router the
worst reactor stall its lag probe saw (C{router.stats}) while idle through
ping sweeps and during the broadcasts. Beside each server's idle window a
process with nothing but the same timer (C{bench/lagfloor.py}) measures the
machine's own lateness, the floor under the probe's figure.

(b) Several processes: C{cluso --workers W} behind one port, sharing
channels through Redis (a C{redis-server} of its own unless C{--redis}),
holding C{--worker-connections} (default 90,000), and the time from one
publish on one worker to the last receipt on all of them.

    python bench/scale.py              # the full run (several minutes)
    python bench/scale.py --quick      # hundreds of connections: a smoke test for CI
    python bench/scale.py --skip-workers --rounds 3   # part (a) three times, alternating

With several rounds a server's figures are the medians over its rounds,
except the worst broadcast and the reactor stalls, which are the worst seen.

The exit status is 1 when a broadcast missed or duplicated a delivery.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout import (
    BENCH,
    CLUSO,
    NODE,
    REPO,
    TOKEN,
    LineChannel,
    ProcessStats,
    child,
    ensure_node_packages,
    machine,
    raise_fd_limit,
    server_environment,
    wait_listening,
)

SCALECLIENT = BENCH / "scaleclient.js"
LAGFLOOR = BENCH / "lagfloor.py"
#: Connections one load-client process opens at most.
PER_CLIENT = 15_000
BROADCASTS = 5
#: Seconds the servers are left idle, through at least two ping sweeps.
IDLE_SECONDS = 22.0
PING_INTERVAL = 10


@dataclass(frozen=True)
class Plan:
    connections: int = 18_000
    workers: int = 5
    worker_connections: int = 90_000
    idle_seconds: float = IDLE_SECONDS
    ping_interval: int = PING_INTERVAL
    per_client: int = PER_CLIENT


QUICK = Plan(connections=300, workers=2, worker_connections=400, idle_seconds=3.0, ping_interval=1)


def kernel_limits() -> dict[str, Any]:
    """
    The settings that bound how many connections one machine holds.
    """

    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "nofile_soft": soft,
        "nofile_hard": hard,
        "somaxconn": read("/proc/sys/net/core/somaxconn"),
        "ip_local_port_range": read("/proc/sys/net/ipv4/ip_local_port_range"),
        "tcp_rmem": read("/proc/sys/net/ipv4/tcp_rmem"),
        "tcp_wmem": read("/proc/sys/net/ipv4/tcp_wmem"),
        "file_max": read("/proc/sys/fs/file-max"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("scale: redis-server is missing (Debian: apt-get install redis-server)")
    port = free_port()
    arguments = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    with child([*arguments, "--appendonly", "no"], workdir / "redis.log"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


def cluso_command(root: Path, plan: Plan, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cluso_router",
        "--listen",
        "tcp:0:interface=127.0.0.1:backlog=4096",
        "--root",
        str(root),
        "--sources",
        "",
        "--max-connections",
        "20000",
        "--ping-interval",
        str(plan.ping_interval),
        "--rate-limit",
        "0",
        *extra,
    ]


def node_command() -> list[str]:
    return ["node", str(BENCH / "baselines" / "node_ws_server.js"), "--port", "0"]


def tree(pid: int) -> list[ProcessStats]:
    """
    C{pid} and its children (a supervisor and its workers).
    """
    processes = [ProcessStats(pid)]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        processes += [ProcessStats(int(child)) for child in children.read_text().split()]
    return processes


def tree_rss(pid: int) -> int:
    return sum(process.rss_bytes() for process in tree(pid))


def tree_cpu(processes: list[ProcessStats]) -> float:
    return sum(sum(process.cpu_times()) for process in processes)


class Clients:
    """
    Load-client processes, each holding part of the connections from its
    own source address.
    """

    def __init__(self, stack: ExitStack, url: str, count: int, workdir: Path, name: str) -> None:
        self.channels: list[LineChannel] = []
        for index in range(count):
            process = stack.enter_context(
                child(
                    ["node", str(SCALECLIENT), url, "scale"],
                    workdir / f"{name}.client{index}.log",
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
            channel = LineChannel(process)
            channel.receive(30)
            self.channels.append(channel)

    def all(self, messages: Sequence[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        for channel, message in zip(self.channels, messages, strict=True):
            channel.send(message)
        return [channel.receive(timeout) for channel in self.channels]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def hold(
    url: str, pid: int, total: int, plan: Plan, workdir: Path, name: str, say: Any
) -> dict[str, Any]:
    """
    Open C{total} connections to C{url}, then measure memory, the idle
    reactor lag and broadcasts.
    """
    clients_needed = max(1, -(-total // plan.per_client))
    with ExitStack() as stack:
        time.sleep(1.0)
        rss_before = tree_rss(pid)
        clients = Clients(stack, url, clients_needed, workdir, name)
        shares = split(total, clients_needed)
        started = time.monotonic()
        opened = clients.all(
            [{"cmd": "connect", "n": n, "local": f"127.0.0.{2 + i}"} for i, n in enumerate(shares)],
            timeout=600,
        )
        open_seconds = time.monotonic() - started
        assert sum(o["opened"] for o in opened) == total
        floor = stack.enter_context(
            subprocess.Popen(
                [sys.executable, str(LAGFLOOR)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        )
        time.sleep(2.0)
        rss_after = tree_rss(pid)
        first = clients.channels[0]
        first.request({"cmd": "publisher", "local": "127.0.0.2"}, 60)
        assert floor.stdin is not None
        floor.stdin.write(b"\n")
        floor.stdin.flush()
        first.request({"cmd": "lag"}, 10)
        time.sleep(plan.idle_seconds)
        idle_lag = first.request({"cmd": "lag"}, 10)["lagMs"]
        machine_lag = json.loads(floor.communicate(timeout=10)[0])["worstMs"]
        broadcasts = []
        server = tree(pid)
        for event in range(BROADCASTS):
            cpu_before = tree_cpu(server)
            sent = first.request({"cmd": "publish", "id": event}, 10)["sentUs"]
            deadline = time.monotonic() + 60
            while True:
                reports = clients.all([{"cmd": "report", "id": event}] * len(shares), 30)
                got = sum(r["count"] for r in reports)
                if got >= total or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            cpu = tree_cpu(server) - cpu_before
            duplicates = sum(r["duplicates"] for r in reports)
            last = max((r["lastUs"] or 0) for r in reports)
            broadcasts.append(
                {
                    "received": got,
                    "duplicates": duplicates,
                    "complete": got == total and duplicates == 0,
                    "seconds": (last - sent) / 1e6 if got else None,
                    "server_cpu_seconds": cpu,
                }
            )
            time.sleep(1.0)
        broadcast_lag = first.request({"cmd": "lag"}, 10)["lagMs"]
        clients.all([{"cmd": "quit"}] * len(shares), 10)
    times = [b["seconds"] for b in broadcasts if b["seconds"] is not None]
    cpu = [b["server_cpu_seconds"] for b in broadcasts]
    result = {
        "connections": total,
        "client_processes": clients_needed,
        "open_seconds": open_seconds,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_per_connection": (rss_after - rss_before) / total,
        "broadcasts": broadcasts,
        "broadcast_median_seconds": statistics.median(times) if times else None,
        "broadcast_worst_seconds": max(times) if times else None,
        "broadcast_cpu_seconds": statistics.median(cpu),
        "idle_lag_ms": idle_lag,
        "machine_lag_ms": machine_lag,
        "broadcast_lag_ms": broadcast_lag,
        "complete": all(b["complete"] for b in broadcasts),
    }
    say(
        f"  {name:28} {total:>7,} connections in {open_seconds:6.1f} s,"
        f" {result['bytes_per_connection'] / 1024:5.2f} KiB each,"
        f" broadcast median {fmt_ms(result['broadcast_median_seconds'])}"
        f" worst {fmt_ms(result['broadcast_worst_seconds'])}"
        f" (server CPU {fmt_ms(result['broadcast_cpu_seconds'])}),"
        f" lag idle {fmt(idle_lag)} / broadcast {fmt(broadcast_lag)} ms"
        f" (an idle timer process: {fmt(machine_lag)} ms)"
        f"{'' if result['complete'] else '  INCOMPLETE'}"
    )
    return result


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def single(name: str, plan: Plan, workdir: Path, env: dict[str, str], say: Any) -> dict[str, Any]:
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    command = cluso_command(root, plan) if name == CLUSO else node_command()
    with child(command, workdir / f"{name}.log", cwd=root, env=env) as server:
        url = wait_listening(server, workdir / f"{name}.log")
        ws = "ws" + url[4:] + f"ws?token={TOKEN}" if name == CLUSO else "ws" + url[4:]
        return hold(ws, server.pid, plan.connections, plan, workdir, name, say)


def workers(plan: Plan, workdir: Path, env: dict[str, str], redis: str, say: Any) -> dict[str, Any]:
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    command = cluso_command(
        root,
        plan,
        ["--workers", str(plan.workers), "--redis", redis, "--redis-prefix", "scale-bench:"],
    )
    log = workdir / "workers.log"
    with child(command, log, cwd=root, env=env) as server:
        url = wait_listening(server, log)
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("listening on") < plan.workers:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("workers did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.1)
        result = hold(
            "ws" + url[4:] + f"ws?token={TOKEN}",
            server.pid,
            plan.worker_connections,
            plan,
            workdir,
            f"cluso-router --workers {plan.workers}",
            say,
        )
        result["workers"] = plan.workers
        return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    One server's rounds as one result: medians of the typical figures, the
    worst of the worst ones, every broadcast, and each round as it was.
    """
    if len(runs) == 1:
        return runs[0]

    def median(key: str) -> Any:
        values = [run[key] for run in runs if run[key] is not None]
        return statistics.median(values) if values else None

    def worst(key: str) -> Any:
        values = [run[key] for run in runs if run[key] is not None]
        return max(values) if values else None

    return {
        "connections": runs[0]["connections"],
        "client_processes": runs[0]["client_processes"],
        "open_seconds": median("open_seconds"),
        "rss_before": median("rss_before"),
        "rss_after": median("rss_after"),
        "bytes_per_connection": median("bytes_per_connection"),
        "broadcasts": [b for run in runs for b in run["broadcasts"]],
        "broadcast_median_seconds": median("broadcast_median_seconds"),
        "broadcast_worst_seconds": worst("broadcast_worst_seconds"),
        "broadcast_cpu_seconds": median("broadcast_cpu_seconds"),
        "idle_lag_ms": worst("idle_lag_ms"),
        "machine_lag_ms": worst("machine_lag_ms"),
        "broadcast_lag_ms": worst("broadcast_lag_ms"),
        "complete": all(run["complete"] for run in runs),
        "rounds": runs,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="cluso-router scale benchmark")
    parser.add_argument("--quick", action="store_true", help="hundreds of connections (CI)")
    parser.add_argument("--connections", type=int, help="connections of one process (18000)")
    parser.add_argument("--workers", type=int, help="worker processes of part (b) (5)")
    parser.add_argument("--worker-connections", type=int, help="connections of part (b) (90000)")
    parser.add_argument("--servers", default=f"{CLUSO},{NODE}", help="servers of part (a)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of part (a), servers alternating (1)"
    )
    parser.add_argument("--skip-workers", action="store_true", help="run part (a) only")
    parser.add_argument("--redis", help="a Redis for part (b) (default: a redis-server of its own)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep-logs", type=Path, help="keep the servers' logs in this directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else Plan()
    changes = {
        key: value
        for key, value in (
            ("connections", args.connections),
            ("workers", args.workers),
            ("worker_connections", args.worker_connections),
        )
        if value is not None
    }
    if changes:
        plan = Plan(**{**plan.__dict__, **changes})
    ensure_node_packages()
    raise_fd_limit()

    def say(line: str) -> None:
        print(line, flush=True)

    limits = kernel_limits()
    info = machine()
    say(f"scale benchmark on {info['cpu']} ({info['cores']} cores), Node {info['node']}")
    say(
        f"limits: open files {limits['nofile_soft']} (hard {limits['nofile_hard']}) per process,"
        f" somaxconn {limits['somaxconn']}, ephemeral ports {limits['ip_local_port_range']}"
        f" per source address (each load client uses its own), tcp_wmem {limits['tcp_wmem']}"
    )
    say(f"plan: {plan}")
    env = server_environment(REPO)
    results: dict[str, Any] = {"machine": info, "limits": limits, "plan": plan.__dict__}
    with tempfile.TemporaryDirectory(prefix="cluso-scale-") as scratch:
        workdir = Path(args.keep_logs) if args.keep_logs else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        names = [s for s in args.servers.split(",") if s]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for number in range(args.rounds):
            if args.rounds > 1:
                say(f"round {number + 1} of {args.rounds}")
            for name in names:
                rounds[name].append(single(name, plan, workdir, env, say))
        results["single"] = {name: combine(runs) for name, runs in rounds.items()}
        if not args.skip_workers:
            with ExitStack() as stack:
                redis = args.redis or stack.enter_context(redis_server(workdir))
                results["workers"] = workers(plan, workdir, env, redis, say)
    single_runs = results["single"]
    if CLUSO in single_runs and NODE in single_runs:
        ours, theirs = single_runs[CLUSO], single_runs[NODE]
        results["ratios"] = {
            "bytes_per_connection": ours["bytes_per_connection"] / theirs["bytes_per_connection"],
            "broadcast_median": (
                ours["broadcast_median_seconds"] / theirs["broadcast_median_seconds"]
                if ours["broadcast_median_seconds"] and theirs["broadcast_median_seconds"]
                else None
            ),
            "broadcast_cpu": (
                ours["broadcast_cpu_seconds"] / theirs["broadcast_cpu_seconds"]
                if theirs["broadcast_cpu_seconds"]
                else None
            ),
        }
        if args.rounds > 1:
            say("\nover all rounds (medians; worst broadcast and stalls: the worst seen)")
            for name, run in single_runs.items():
                say(
                    f"  {name:28} {run['bytes_per_connection'] / 1024:5.2f} KiB each,"
                    f" broadcast median {fmt_ms(run['broadcast_median_seconds'])}"
                    f" worst {fmt_ms(run['broadcast_worst_seconds'])}"
                    f" (server CPU {fmt_ms(run['broadcast_cpu_seconds'])}),"
                    f" lag idle {fmt(run['idle_lag_ms'])} / broadcast"
                    f" {fmt(run['broadcast_lag_ms'])} ms"
                    f" (an idle timer process: {fmt(run['machine_lag_ms'])} ms)"
                )
            won = sum(
                mine["broadcast_median_seconds"] < other["broadcast_median_seconds"]
                for mine, other in zip(ours["rounds"], theirs["rounds"], strict=True)
            )
            results["ratios"]["rounds_won"] = won
            say(f"  cluso-router's broadcast median was the lower in {won} of {args.rounds} rounds")
        say(
            f"\ncluso-router against Node ws at {plan.connections:,}: memory per connection"
            f" {results['ratios']['bytes_per_connection']:.2f}x, broadcast time"
            f" {results['ratios']['broadcast_median'] or 0:.2f}x, server CPU per broadcast"
            f" {results['ratios']['broadcast_cpu'] or 0:.2f}x"
        )
    complete = (
        all(r["complete"] for r in single_runs.values())
        and results.get("workers", {"complete": True})["complete"]
    )
    results["complete"] = complete
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not complete:
        say("\nSOME BROADCASTS MISSED OR DUPLICATED DELIVERIES")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
