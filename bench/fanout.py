"""
Fan-out benchmark: cluso-router against a naive Autobahn server and a Node.js
server on C{ws}, under identical load, in alternating rounds.

Each round starts one server as its own process and one load client (Node.js,
C{bench/loadclient.js}) as another. The client opens the subscribers over
loopback, and a publisher connection sends each event with C{send}, its send
time embedded; the client records when every subscriber got it. Per server and
subscriber count N this measures deliveries per second, delivery latency, the
server's CPU seconds per million deliveries (from C{/proc/<pid>/stat}), the
load client's own CPU use, the server's RSS per idle subscribed connection,
p99 latency at a fixed offered load below saturation, and bursts: B events
written back to back in one write (B = 1, 10, 100) to N = 1000 subscribers,
with the time from each burst's write to the last subscriber's receipt of
all of it. Medians over the
rounds and ratios against the baselines are printed, and written as JSON with
C{--json}.

    python bench/fanout.py                 # the full run (a few minutes)
    python bench/fanout.py --quick         # tiny N and K: a smoke test for CI
    python bench/fanout.py --plot out.png  # also draw deliveries/s against N and B
    python bench/fanout.py --servers cluso-router --cluso-option=--redis=redis://127.0.0.1/9
                                           # cluso-router behind its Redis backplane

The exit status is 1 when any run lost, duplicated or reordered an event.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADCLIENT = BENCH / "loadclient.js"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_LISTENING = re.compile(r"listening on (http://\S+/)")

CLUSO = "cluso-router"
NAIVE = "naive-autobahn"
NODE = "node-ws"
SERVERS = (CLUSO, NAIVE, NODE)


@dataclass(frozen=True)
class Plan:
    """
    What one round measures.

    @ivar sizes: subscriber counts of the throughput runs.
    @ivar deliveries: deliveries aimed at per throughput run; the number of
        events is C{deliveries // N}, at least C{min_events}.
    @ivar window: deliveries allowed in flight; at most C{window // N} events
        (at least one) are published but not yet received by everyone.
    @ivar memory_n: subscribers at which RSS per idle connection is measured,
        against C{memory_base} subscribers.
    @ivar rate_n: subscribers of the fixed-offered-load run.
    @ivar bursts: burst sizes B of the burst runs, at C{burst_n} subscribers,
        each run publishing C{burst_events} events; at most C{window // N}
        events (at least one burst) are incomplete at once.
    """

    sizes: tuple[int, ...] = (100, 1000, 5000)
    deliveries: int = 300_000
    min_events: int = 20
    window: int = 20_000
    memory_n: int = 5000
    memory_base: int = 100
    rate_n: int = 1000
    rate: float = 50.0
    rate_seconds: float = 6.0
    warmup_deliveries: int = 50_000
    settle_seconds: float = 1.0
    bursts: tuple[int, ...] = (1, 10, 100)
    burst_n: int = 1000
    burst_events: int = 2000

    def events(self, n: int) -> int:
        return max(self.min_events, self.deliveries // n)

    def in_flight(self, n: int) -> int:
        return max(1, min(self.events(n), self.window // n))

    def bursts_in_flight(self, size: int) -> int:
        return max(1, self.window // self.burst_n // size)


QUICK = Plan(
    sizes=(10, 40),
    deliveries=1200,
    min_events=20,
    window=200,
    memory_n=40,
    memory_base=10,
    rate_n=40,
    rate=50.0,
    rate_seconds=0.6,
    warmup_deliveries=200,
    settle_seconds=0.2,
    bursts=(1, 10),
    burst_n=40,
    burst_events=100,
)


class ProcessStats:
    """
    CPU and memory of a running process, read from C{/proc}.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_times(self) -> tuple[float, float]:
        """
        User and system seconds of every thread of the process so far.
        """
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def rss_bytes(self) -> int:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE


def machine_cpu() -> tuple[float, float]:
    """
    Seconds all CPUs spent busy outside softirq, and in softirq, so far.

    Loopback TCP does much of its receive work in softirq, which the kernel
    does not charge to the process that caused it; it is reported apart.
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + steal) / CLK_TCK, softirq / CLK_TCK


def wait_quiet(limit: float, say: Any, threshold: float = 0.3) -> float:
    """
    Wait up to C{limit} seconds for the rest of the machine to use less than
    C{threshold} cores (measured over one second); return what it used last.
    """
    deadline = time.monotonic() + limit
    while True:
        busy, softirq = machine_cpu()
        time.sleep(1.0)
        busy_after, softirq_after = machine_cpu()
        used = busy_after - busy + softirq_after - softirq
        if used < threshold or time.monotonic() >= deadline:
            return used
        say(f"  waiting: other processes use {used:.2f} cores")


class LineChannel:
    """
    JSON lines to and from a child's stdin/stdout, with timeouts.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._fd = process.stdout.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def send(self, message: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(message).encode() + b"\n")
        self._stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise TimeoutError(f"no answer from the load client within {timeout:.0f} s")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise RuntimeError(f"load client exited with status {self._process.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load client: {answer['error']}")
        return answer

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(message)
        return self.receive(timeout)


#: The access token the benchmark's cluso-router requires (the baselines ignore it).
TOKEN = "fanout-benchmark-token"


def cluso_options(env: dict[str, str]) -> list[str]:
    """
    The options cluso-router runs with: its defaults, except that the one
    publisher connection is not rate limited (the baselines have no limit)
    and no ping sweep falls inside a run. The access token goes in the
    environment.
    """
    options = ["--ping-interval", "3600"]
    usage = subprocess.run(
        [sys.executable, "-m", "cluso_router", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        check=True,
    ).stdout
    if "--rate-limit" in usage:
        options += ["--rate-limit", "0"]
    return options


def server_command(name: str, root: Path, cluso: list[str]) -> list[str]:
    python = sys.executable
    if name == CLUSO:
        listen = "tcp:0:interface=127.0.0.1:backlog=1024"
        return [python, "-m", "cluso_router", "--listen", listen, "--root", str(root), *cluso]
    if name == NAIVE:
        return [python, str(BENCH / "baselines" / "naive_autobahn.py"), "--port", "0"]
    if name == NODE:
        return ["node", str(BENCH / "baselines" / "node_ws_server.js"), "--port", "0"]
    raise ValueError(name)


def ws_path(name: str) -> str:
    return f"ws?token={TOKEN}" if name == CLUSO else ""


@contextmanager
def child(args: Sequence[str], log: Path, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """
    Run C{args}, its output going to C{log} unless redirected; stop it on exit.
    """
    with log.open("wb") as output:
        popen.setdefault("stdout", output)
        process = subprocess.Popen(list(args), stderr=output, **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_listening(process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")


@dataclass
class Measured:
    """
    The stats of one load-client command with the CPU both processes spent on it.
    """

    answer: dict[str, Any]
    wall: float
    server_cpu: float
    server_system: float
    client_cpu: float
    other_cpu: float
    softirq: float


def measured(
    channel: LineChannel,
    server: ProcessStats,
    client: ProcessStats,
    message: dict[str, Any],
    timeout: float,
) -> Measured:
    (user, system), client_before = server.cpu_times(), client.cpu_seconds()
    busy, softirq = machine_cpu()
    started = time.monotonic()
    answer = channel.request(message, timeout)
    wall = time.monotonic() - started
    user_after, system_after = server.cpu_times()
    client_cpu = client.cpu_seconds() - client_before
    busy_after, softirq_after = machine_cpu()
    server_cpu = user_after + system_after - user - system
    return Measured(
        answer,
        wall,
        server_cpu,
        system_after - system,
        client_cpu,
        max(0.0, busy_after - busy - server_cpu - client_cpu),
        softirq_after - softirq,
    )


def run_summary(kind: str, result: Measured) -> dict[str, Any]:
    answer = result.answer
    deliveries = answer["deliveries"]
    busy = answer["seconds"] or result.wall
    return {
        "kind": kind,
        "n": answer["n"],
        "events": answer["events"],
        "deliveries": deliveries,
        "expected": answer["expected"],
        "complete": answer["complete"],
        "duplicates": answer["duplicates"],
        "gaps": answer["gaps"],
        "missing": answer["missing"],
        "lost_connections": answer["lost"],
        "seconds": answer["seconds"],
        "deliveries_per_second": answer["deliveriesPerSecond"],
        "latency_ms": answer["latencyMs"],
        "server_cpu_seconds": result.server_cpu,
        "server_cpu_per_million": result.server_cpu / deliveries * 1e6 if deliveries else None,
        "server_system_share": (
            result.server_system / result.server_cpu if result.server_cpu else None
        ),
        "server_cores": result.server_cpu / busy if busy else None,
        "client_cpu_seconds": result.client_cpu,
        "client_cpu_per_million": result.client_cpu / deliveries * 1e6 if deliveries else None,
        "burst_ms": answer.get("burstMs"),
        "client_cores": result.client_cpu / busy if busy else None,
        "softirq_cores": result.softirq / result.wall,
        "other_cores": result.other_cpu / result.wall,
    }


def server_environment(cluso_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(cluso_path), PYTHONUNBUFFERED="1", CLUSO_TOKEN=TOKEN)


@dataclass
class Quietness:
    """
    How much work of other processes a measurement tolerates: a run during
    which they used more than C{max_cores} is repeated (after waiting up to
    C{wait} seconds for them to calm down), at most C{retries} times.
    """

    max_cores: float | None = None
    retries: int = 4
    wait: float = 0.0


@dataclass
class Driver:
    """
    One round's server and load client, and how to measure a run on them.
    """

    name: str
    channel: LineChannel
    server: ProcessStats
    client: ProcessStats
    quietness: Quietness
    say: Any

    def run(self, kind: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        for attempt in range(self.quietness.retries + 1):
            result = measured(self.channel, self.server, self.client, message, timeout)
            summary = run_summary(kind, result)
            summary["attempts"] = attempt + 1
            limit = self.quietness.max_cores
            if limit is None or summary["other_cores"] <= limit or not summary["complete"]:
                break
            self.say(
                f"  {self.name:15} N={summary['n']:<5} repeating a {kind} run:"
                f" other processes used {summary['other_cores']:.2f} cores"
            )
            if self.quietness.wait:
                wait_quiet(self.quietness.wait, self.say)
        return summary


def run_round(
    name: str,
    index: int,
    plan: Plan,
    workdir: Path,
    env: dict[str, str],
    cluso: list[str],
    quietness: Quietness,
    say: Any,
) -> dict[str, Any]:
    """
    Start server C{name} and a load client, run C{plan} against them, stop both.
    """
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    log = workdir / f"{name}.{index}.log"
    outcome: dict[str, Any] = {"server": name, "runs": []}
    command = server_command(name, root, cluso)
    with child(command, log, cwd=root, env=env) as server_process:
        url = wait_listening(server_process, log)
        server = ProcessStats(server_process.pid)
        outcome["rss_start"] = server.rss_bytes()
        ws_url = "ws" + url[4:] + ws_path(name)
        client_log = workdir / f"{name}.{index}.client.log"
        with child(
            ["node", str(LOADCLIENT), ws_url, "bench"],
            client_log,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as client_process:
            channel = LineChannel(client_process)
            channel.receive(30)
            driver = Driver(name, channel, server, ProcessStats(client_process.pid), quietness, say)
            outcome["memory"] = idle_memory(driver, plan)
            largest = max(*plan.sizes, plan.memory_n, plan.rate_n, plan.burst_n)
            channel.request({"cmd": "connect", "n": largest}, 300)
            warmup_events = max(2, plan.warmup_deliveries // largest)
            channel.request(
                {"cmd": "run", "events": warmup_events, "window": plan.in_flight(largest)}, 120
            )
            for n in sorted({*plan.sizes, plan.rate_n, plan.burst_n}, reverse=True):
                channel.request({"cmd": "connect", "n": n}, 120)
                if n in plan.sizes:
                    outcome["runs"].append(throughput_run(driver, plan, n))
                if n == plan.rate_n:
                    outcome["runs"].append(rate_run(driver, plan, n))
                if n == plan.burst_n:
                    outcome["runs"].extend(burst_run(driver, plan, b) for b in plan.bursts)
            channel.request({"cmd": "quit"}, 30)
    return outcome


def idle_memory(driver: Driver, plan: Plan) -> dict[str, Any]:
    """
    The server's RSS growth per subscribed connection from C{memory_base}
    to C{memory_n} idle subscribers.
    """
    driver.channel.request({"cmd": "connect", "n": plan.memory_base}, 120)
    time.sleep(plan.settle_seconds)
    rss_base = driver.server.rss_bytes()
    connected = driver.channel.request({"cmd": "connect", "n": plan.memory_n}, 300)
    time.sleep(plan.settle_seconds)
    rss_full = driver.server.rss_bytes()
    return {
        "n": plan.memory_n,
        "base_n": plan.memory_base,
        "rss_base": rss_base,
        "rss_full": rss_full,
        "bytes_per_connection": (rss_full - rss_base) / (plan.memory_n - plan.memory_base),
        "connect_seconds": connected["seconds"],
    }


def throughput_run(driver: Driver, plan: Plan, n: int) -> dict[str, Any]:
    events = plan.events(n)
    summary = driver.run(
        "throughput",
        {"cmd": "run", "events": events, "window": plan.in_flight(n)},
        timeout=60 + n * events / 10_000,
    )
    driver.say(
        f"  {driver.name:15} N={n:<5} {summary['deliveries_per_second'] or 0:>10,.0f}"
        f" deliveries/s  server {summary['server_cpu_per_million']:.2f}"
        f" CPU-s/M  client {summary['client_cores']:.2f} cores"
        f"{'' if summary['complete'] else '  INCOMPLETE'}"
    )
    return summary


def rate_run(driver: Driver, plan: Plan, n: int) -> dict[str, Any]:
    events = max(1, round(plan.rate * plan.rate_seconds))
    summary = driver.run(
        "rate",
        {"cmd": "rate", "events": events, "rate": plan.rate},
        timeout=60 + plan.rate_seconds * 2,
    )
    summary["rate"] = plan.rate
    latency = summary["latency_ms"]
    driver.say(
        f"  {driver.name:15} N={n:<5} {plan.rate:g} events/s: p50 {latency['p50']:.2f} ms"
        f"  p99 {latency['p99']:.2f} ms  max {latency['max']:.2f} ms"
        f"{'' if summary['complete'] else '  INCOMPLETE'}"
    )
    return summary


def burst_run(driver: Driver, plan: Plan, size: int) -> dict[str, Any]:
    count = max(1, plan.burst_events // size)
    summary = driver.run(
        "burst",
        {
            "cmd": "burst",
            "bursts": count,
            "size": size,
            "inFlight": plan.bursts_in_flight(size),
        },
        timeout=60 + plan.burst_n * count * size / 10_000,
    )
    summary["burst"] = size
    timing = summary["burst_ms"]
    driver.say(
        f"  {driver.name:15} N={plan.burst_n:<5} B={size:<4}"
        f" {summary['deliveries_per_second'] or 0:>10,.0f} deliveries/s"
        f"  server {summary['server_cpu_per_million']:.2f} CPU-s/M"
        f"  client {summary['client_cpu_per_million']:.2f} CPU-s/M"
        f"  burst p50 {timing['p50']:.2f} ms p99 {timing['p99']:.2f} ms"
        f"{'' if summary['complete'] else '  INCOMPLETE'}"
    )
    return summary


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Summary:
    throughput: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    rate: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    bursts: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ratios: dict[str, Any] = field(default_factory=dict)
    complete: bool = True


def summarise(rounds: list[dict[str, Any]], plan: Plan, servers: Sequence[str]) -> Summary:
    """
    Medians per server and N over the rounds, and ratios of those medians;
    the ratios of each round (servers run back to back) are kept beside them.
    """
    summary = Summary()
    for name in servers:
        mine = [r for r in rounds if r["server"] == name]
        runs = [run for r in mine for run in r["runs"]]
        summary.complete &= all(run["complete"] for run in runs)
        summary.throughput[name] = {}
        for n in plan.sizes:
            at_n = [run for run in runs if run["kind"] == "throughput" and run["n"] == n]
            summary.throughput[name][n] = {
                "runs": len(at_n),
                "complete": all(run["complete"] for run in at_n),
                "deliveries_per_second": median([run["deliveries_per_second"] for run in at_n]),
                "p50_ms": median([run["latency_ms"]["p50"] for run in at_n]),
                "p99_ms": median([run["latency_ms"]["p99"] for run in at_n]),
                "max_ms": median([run["latency_ms"]["max"] for run in at_n]),
                "server_cpu_per_million": median([run["server_cpu_per_million"] for run in at_n]),
                "server_cores": median([run["server_cores"] for run in at_n]),
                "client_cores": median([run["client_cores"] for run in at_n]),
                "server_system_share": median([run["server_system_share"] for run in at_n]),
                "other_cores": median([run["other_cores"] for run in at_n]),
            }
        rate_runs = [run for run in runs if run["kind"] == "rate"]
        summary.rate[name] = {
            "runs": len(rate_runs),
            "complete": all(run["complete"] for run in rate_runs),
            "p50_ms": median([run["latency_ms"]["p50"] for run in rate_runs]),
            "p99_ms": median([run["latency_ms"]["p99"] for run in rate_runs]),
            "max_ms": median([run["latency_ms"]["max"] for run in rate_runs]),
            "server_cpu_per_million": median([run["server_cpu_per_million"] for run in rate_runs]),
            "client_cores": median([run["client_cores"] for run in rate_runs]),
        }
        summary.bursts[name] = {}
        for size in plan.bursts:
            at_b = [run for run in runs if run["kind"] == "burst" and run["burst"] == size]
            summary.bursts[name][size] = {
                "runs": len(at_b),
                "complete": all(run["complete"] for run in at_b),
                "deliveries_per_second": median([run["deliveries_per_second"] for run in at_b]),
                "server_cpu_per_million": median([run["server_cpu_per_million"] for run in at_b]),
                "client_cpu_per_million": median([run["client_cpu_per_million"] for run in at_b]),
                "client_cores": median([run["client_cores"] for run in at_b]),
                "burst_p50_ms": median([run["burst_ms"]["p50"] for run in at_b]),
                "burst_p99_ms": median([run["burst_ms"]["p99"] for run in at_b]),
            }
        summary.memory[name] = {
            "n": plan.memory_n,
            "bytes_per_connection": median([r["memory"]["bytes_per_connection"] for r in mine]),
            "rss_start": median([r["rss_start"] for r in mine]),
        }
    if CLUSO in servers:
        summary.ratios = cluso_ratios(rounds, summary, plan, servers)
    return summary


def cluso_ratios(
    rounds: list[dict[str, Any]], summary: Summary, plan: Plan, servers: Sequence[str]
) -> dict[str, Any]:
    def per_round(peer: str, n: int, key: str) -> list[float | None]:
        mine = [r for r in rounds if r["server"] == CLUSO]
        theirs = [r for r in rounds if r["server"] == peer]
        found = []
        for a, b in zip(mine, theirs, strict=False):
            ra = [x for x in a["runs"] if x["kind"] == "throughput" and x["n"] == n]
            rb = [x for x in b["runs"] if x["kind"] == "throughput" and x["n"] == n]
            if ra and rb:
                found.append(ratio(ra[0][key], rb[0][key]))
        return found

    ratios: dict[str, Any] = {}
    for peer in (NODE, NAIVE):
        if peer not in servers:
            continue
        by_n = {}
        for n in plan.sizes:
            ours, theirs = summary.throughput[CLUSO][n], summary.throughput[peer][n]
            by_n[n] = {
                "deliveries_per_second": ratio(
                    ours["deliveries_per_second"], theirs["deliveries_per_second"]
                ),
                "deliveries_per_second_per_round": per_round(peer, n, "deliveries_per_second"),
                "server_cpu_per_delivery": ratio(
                    ours["server_cpu_per_million"], theirs["server_cpu_per_million"]
                ),
                "server_cpu_per_delivery_per_round": per_round(peer, n, "server_cpu_per_million"),
            }
        by_burst = {}
        for size in plan.bursts:
            ours, theirs = summary.bursts[CLUSO][size], summary.bursts[peer][size]
            by_burst[size] = {
                "deliveries_per_second": ratio(
                    ours["deliveries_per_second"], theirs["deliveries_per_second"]
                ),
                "server_cpu_per_delivery": ratio(
                    ours["server_cpu_per_million"], theirs["server_cpu_per_million"]
                ),
                "burst_p99": ratio(ours["burst_p99_ms"], theirs["burst_p99_ms"]),
            }
        ratios[peer] = {
            "by_n": by_n,
            "by_burst": by_burst,
            "rate_p99": ratio(summary.rate[CLUSO]["p99_ms"], summary.rate[peer]["p99_ms"]),
            "memory_per_connection": ratio(
                summary.memory[CLUSO]["bytes_per_connection"],
                summary.memory[peer]["bytes_per_connection"],
            ),
        }
    return ratios


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(summary: Summary, plan: Plan, servers: Sequence[str], say: Any) -> None:
    say("\nThroughput (medians; latency here is under saturation, mostly queueing)")
    say(
        f"{'server':15} {'N':>5} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'CPU-s/M':>8} {'sys':>4} {'per core':>9} {'srv cores':>9} {'client cores':>12}"
        f" {'other':>5} {'complete':>8}"
    )
    busiest = 0.0
    for n in plan.sizes:
        for name in servers:
            t = summary.throughput[name][n]
            busiest = max(busiest, t["other_cores"] or 0.0)
            say(
                f"{name:15} {n:>5} {fmt(t['deliveries_per_second'], ',.0f'):>13}"
                f" {fmt(t['p50_ms'], '.1f'):>8} {fmt(t['p99_ms'], '.1f'):>8}"
                f" {fmt(t['max_ms'], '.1f'):>8} {fmt(t['server_cpu_per_million'], '.2f'):>8}"
                f" {fmt(t['server_system_share'], '.0%'):>4}"
                f" {fmt(ratio(1e6, t['server_cpu_per_million']), ',.0f'):>9}"
                f" {fmt(t['server_cores'], '.2f'):>9} {fmt(t['client_cores'], '.2f'):>12}"
                f" {fmt(t['other_cores'], '.2f'):>5} {'yes' if t['complete'] else 'NO':>8}"
            )
    say(
        "CPU-s/M: server CPU seconds per million deliveries (sys: its kernel share); per core:"
        " deliveries\nper second of server CPU; other: cores busy with neither server nor client"
    )
    if busiest > 0.2:
        say(f"WARNING: other processes used up to {busiest:.2f} cores; these numbers are noisy")
    say(f"\nFixed offered load: N={plan.rate_n}, {plan.rate:g} events/s (medians)")
    say(f"{'server':15} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU-s/M':>8} {'complete':>8}")
    for name in servers:
        r = summary.rate[name]
        say(
            f"{name:15} {fmt(r['p50_ms'], '.2f'):>8} {fmt(r['p99_ms'], '.2f'):>8}"
            f" {fmt(r['max_ms'], '.2f'):>8} {fmt(r['server_cpu_per_million'], '.2f'):>8}"
            f" {'yes' if r['complete'] else 'NO':>8}"
        )
    say(f"\nRSS per idle subscribed connection at N={plan.memory_n} (medians)")
    for name in servers:
        m = summary.memory[name]
        say(
            f"{name:15} {fmt(m['bytes_per_connection'] / 1024, '.2f'):>8} KiB"
            f"   (process at start: {fmt(m['rss_start'] / 2**20, '.1f')} MiB)"
        )
    say(f"\nBursts: B events in one write, N={plan.burst_n} (medians)")
    say(
        f"{'server':15} {'B':>4} {'deliveries/s':>13} {'CPU-s/M':>8} {'client CPU-s/M':>14}"
        f" {'burst p50 ms':>12} {'burst p99 ms':>12} {'complete':>8}"
    )
    for size in plan.bursts:
        for name in servers:
            b = summary.bursts[name][size]
            say(
                f"{name:15} {size:>4} {fmt(b['deliveries_per_second'], ',.0f'):>13}"
                f" {fmt(b['server_cpu_per_million'], '.2f'):>8}"
                f" {fmt(b['client_cpu_per_million'], '.2f'):>14}"
                f" {fmt(b['burst_p50_ms'], '.2f'):>12} {fmt(b['burst_p99_ms'], '.2f'):>12}"
                f" {'yes' if b['complete'] else 'NO':>8}"
            )
    if not summary.ratios:
        return
    say("\nRatios of cluso-router to each baseline (ratio of medians; per-round in brackets)")
    for peer, ratios in summary.ratios.items():
        for n, r in ratios["by_n"].items():
            rounds = ", ".join(fmt(x, ".2f") for x in r["deliveries_per_second_per_round"])
            cpu_rounds = ", ".join(fmt(x, ".2f") for x in r["server_cpu_per_delivery_per_round"])
            say(
                f"vs {peer:15} N={n:<5} deliveries/s {fmt(r['deliveries_per_second'], '.2f')}x"
                f" [{rounds}]   CPU per delivery {fmt(r['server_cpu_per_delivery'], '.2f')}x"
                f" [{cpu_rounds}]"
            )
        for size, r in ratios["by_burst"].items():
            say(
                f"vs {peer:15} B={size:<4} deliveries/s {fmt(r['deliveries_per_second'], '.2f')}x"
                f"   CPU per delivery {fmt(r['server_cpu_per_delivery'], '.2f')}x"
                f"   burst p99 {fmt(r['burst_p99'], '.2f')}x"
            )
        say(
            f"vs {peer:15} fixed-load p99 {fmt(ratios['rate_p99'], '.2f')}x"
            f"   memory per connection {fmt(ratios['memory_per_connection'], '.2f')}x"
        )


def plot(summary: Summary, plan: Plan, servers: Sequence[str], path: Path) -> None:
    """
    Deliveries per second against N (throughput runs) and against B (burst
    runs), one line per server, from this run's medians.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "fanout: --plot needs matplotlib: pip install -e '.[bench]' (or pip install matplotlib)"
        ) from None
    figure, (by_n, by_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in servers:
        by_n.plot(
            plan.sizes,
            [summary.throughput[name][n]["deliveries_per_second"] for n in plan.sizes],
            marker="o",
            label=name,
        )
        by_b.plot(
            plan.bursts,
            [summary.bursts[name][b]["deliveries_per_second"] for b in plan.bursts],
            marker="o",
            label=name,
        )
    by_n.set(xscale="log", xlabel="subscribers N", ylabel="deliveries/s", title="Fan-out")
    by_b.set(
        xscale="log",
        xlabel="events per burst B",
        ylabel="deliveries/s",
        title=f"Bursts, N={plan.burst_n}",
    )
    for axes in (by_n, by_b):
        axes.grid(True, alpha=0.3)
        axes.legend()
        axes.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {}
    for module in ("twisted", "autobahn"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    ws_package = BENCH / "node_modules" / "ws" / "package.json"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        or None,
        "ws": json.loads(ws_package.read_text())["version"] if ws_package.exists() else None,
        **versions,
    }


def ensure_node_packages() -> None:
    """
    Install the Node.js packages of C{bench/package.json} when missing.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"fanout: {tool} is missing (Debian: apt-get install nodejs npm)")
    if not (BENCH / "node_modules" / "ws" / "package.json").exists():
        subprocess.run(
            ["npm", "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
        )


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="cluso-router fan-out benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny N and K, two rounds (CI)")
    parser.add_argument("--rounds", type=int, help="rounds per server (default 3; quick: 2)")
    parser.add_argument("--sizes", help="comma-separated subscriber counts (default 100,1000,5000)")
    parser.add_argument("--deliveries", type=int, help="deliveries per throughput run")
    parser.add_argument("--window", type=int, help="deliveries in flight in throughput runs")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which servers to run")
    parser.add_argument("--bursts", help="comma-separated burst sizes B (default 1,10,100)")
    parser.add_argument(
        "--plot", type=Path, help="draw deliveries/s against N and B into this PNG (matplotlib)"
    )
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument("--keep-logs", type=Path, help="keep the servers' logs in this directory")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each server's run, wait up to this long for other processes to go idle",
    )
    parser.add_argument(
        "--max-background",
        type=float,
        metavar="CORES",
        help="repeat a run (up to 4 times) during which other processes used more CPU than this",
    )
    parser.add_argument(
        "--cluso-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="pass OPTION to cluso-router too (repeat; e.g. --cluso-option=--redis=redis://...)",
    )
    parser.add_argument(
        "--cluso-path",
        type=Path,
        default=REPO,
        help="source tree whose cluso_router is measured (default: this checkout)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {}
    if args.sizes:
        changes["sizes"] = tuple(int(s) for s in args.sizes.split(","))
    if args.deliveries:
        changes["deliveries"] = args.deliveries
    if args.window:
        changes["window"] = args.window
    if args.bursts:
        changes["bursts"] = tuple(int(s) for s in args.bursts.split(","))
    if changes:
        plan = Plan(**{**plan.__dict__, **changes})
    rounds_per_server = args.rounds or (2 if args.quick else 3)
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"fanout: unknown servers {sorted(unknown)}; choose from {SERVERS}")

    ensure_node_packages()
    raise_fd_limit()

    def say(line: str) -> None:
        print(line, flush=True)

    env = server_environment(args.cluso_path.resolve())
    cluso = [*cluso_options(env), *args.cluso_option] if CLUSO in servers else []
    info = machine()
    say(
        f"fan-out benchmark on {info['cpu']} ({info['cores']} cores), Python {info['python']},"
        f" Twisted {info['twisted']}, Autobahn {info['autobahn']}, Node {info['node']},"
        f" ws {info['ws']}"
    )
    say(f"plan: {plan}; {rounds_per_server} alternating rounds")
    quietness = Quietness(max_cores=args.max_background, wait=args.wait_quiet)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cluso-fanout-") as scratch:
        workdir = Path(args.keep_logs) if args.keep_logs else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for index in range(rounds_per_server):
            order = servers[index % len(servers) :] + servers[: index % len(servers)]
            say(f"round {index + 1}/{rounds_per_server}: {', '.join(order)}")
            for name in order:
                if args.wait_quiet:
                    wait_quiet(args.wait_quiet, say)
                rounds.append(run_round(name, index, plan, workdir, env, cluso, quietness, say))
    summary = summarise(rounds, plan, servers)
    report(summary, plan, servers, say)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "plan": plan.__dict__,
                    "rounds": rounds,
                    "summary": {
                        "complete": summary.complete,
                        "throughput": summary.throughput,
                        "rate": summary.rate,
                        "memory": summary.memory,
                        "bursts": summary.bursts,
                        "ratios": summary.ratios,
                    },
                },
                indent=2,
            )
        )
    if args.plot:
        plot(summary, plan, servers, args.plot)
        say(f"\nplot written to {args.plot}")
    if not summary.complete:
        say("\nSOME RUNS LOST, DUPLICATED OR REORDERED EVENTS")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
