"""
Redis backplane benchmark: cross-node delivery latency and fan-out
throughput with 1, 2 and 3 C{twistd cluso} nodes sharing one Redis, in the
same run on this machine.

For each node count it starts a C{redis-server} of its own and the nodes,
spreads C{--subscribers} subscribers of one channel evenly across them, then:

- latency: a publisher on node 0 sends C{--rate} events per second for
  C{--seconds} seconds, each carrying its send time; p50/p99 of send-to-
  receive time, split into subscribers on node 0 and on other nodes;
- throughput: one publisher per node sends C{--events} events in all as
  fast as it can; deliveries per second until every subscriber has every
  event, and deliveries per CPU-second of the nodes (from C{/proc}), which
  is what sizing needs since the load client shares the machine.

    python bench/backplane.py            # the full run (about a minute)
    python bench/backplane.py --quick    # small numbers, a smoke test

The exit status is 1 when any subscriber lost, repeated or reordered an event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import websockets

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Node:
    process: subprocess.Popen[str]
    url: str

    @property
    def ws(self) -> str:
        return "ws" + self.url[4:] + "ws"


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def start_node(redis_port: int, root: str) -> Node:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    process = subprocess.Popen(
        [
            *(twistd, "--pidfile=", "-n", "cluso"),
            *("--redis", f"redis://127.0.0.1:{redis_port}/0"),
            *("--listen", "tcp:0:interface=127.0.0.1", "--auth", "none", "--sources", ""),
            *("--rate-limit", "0", "--max-queue-bytes", str(64 << 20)),
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"listening on (http://\S+/)", line)
        if match:
            url = match.group(1)
            break
    else:
        raise SystemExit("node did not start")
    threading.Thread(target=process.stdout.read, daemon=True).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "api/health") as response:
            if json.load(response)["data"]["status"] == "ok":
                return Node(process, url)
        time.sleep(0.1)
    raise SystemExit("node did not reach Redis")


class Subscriber:
    def __init__(self, node: int) -> None:
        self.node = node
        self.seqs: list[int] = []
        self.latencies: list[float] = []
        self.done = asyncio.Event()
        self.expect = 0

    async def run(self, url: str, ready: asyncio.Event) -> None:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "channel": "bench", "id": 1}))
            await ws.recv()
            ready.set()
            async for raw in ws:
                now = time.time()
                message = json.loads(raw)
                if message.get("type") != "event":
                    continue
                self.seqs.append(message["seq"])
                self.latencies.append(now - message["data"]["t"])
                if len(self.seqs) >= self.expect:
                    self.done.set()


async def publish(url: str, count: int, interval: float) -> None:
    async with websockets.connect(url) as ws:
        await ws.recv()
        for _ in range(count):
            await ws.send(
                json.dumps({"type": "send", "channel": "bench", "data": {"t": time.time()}})
            )
            if interval:
                await asyncio.sleep(interval)
        await asyncio.sleep(0.5)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def measure(nodes: list[Node], args: argparse.Namespace) -> dict[str, Any]:
    subscribers = [Subscriber(i % len(nodes)) for i in range(args.subscribers)]
    tasks = []
    for sub in subscribers:
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(sub.run(nodes[sub.node].ws, ready)))
        await ready.wait()
    latency_events = int(args.rate * args.seconds)
    for sub in subscribers:
        sub.expect = latency_events
    await publish(nodes[0].ws, latency_events, 1 / args.rate)
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subscribers)), 30)
    same = [x for s in subscribers if s.node == 0 for x in s.latencies]
    cross = [x for s in subscribers if s.node != 0 for x in s.latencies]
    for sub in subscribers:
        sub.done.clear()
        sub.latencies.clear()
        sub.expect = latency_events + args.events
    cpu_before = sum(cpu_seconds(n.process.pid) for n in nodes)
    started = time.perf_counter()
    share = args.events // len(nodes)
    counts = [share + (1 if i < args.events % len(nodes) else 0) for i in range(len(nodes))]
    await asyncio.gather(*(publish(n.ws, c, 0) for n, c in zip(nodes, counts, strict=True)))
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subscribers)), 120)
    elapsed = time.perf_counter() - started - 0.5
    node_cpu = sum(cpu_seconds(n.process.pid) for n in nodes) - cpu_before
    deliveries = args.events * len(subscribers)
    ok = all(s.seqs == list(range(1, len(s.seqs) + 1)) for s in subscribers)
    ok = ok and len({tuple(s.seqs) for s in subscribers}) == 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "nodes": len(nodes),
        "subscribers": len(subscribers),
        "latency_same_p50_ms": percentile(same, 50),
        "latency_same_p99_ms": percentile(same, 99),
        "latency_cross_p50_ms": percentile(cross, 50) if cross else None,
        "latency_cross_p99_ms": percentile(cross, 99) if cross else None,
        "deliveries_per_s": deliveries / elapsed,
        "deliveries_per_node_cpu_s": deliveries / node_cpu if node_cpu else None,
        "in_order_exactly_once": ok,
    }


def run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    redis = start_redis(port)
    nodes: list[Node] = []
    try:
        with tempfile.TemporaryDirectory() as root:
            nodes = [start_node(port, root) for _ in range(count)]
            return asyncio.run(measure(nodes, args))
    finally:
        for node in nodes:
            node.process.terminate()
            node.process.wait(10)
        redis.terminate()
        redis.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=60)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.rate, args.seconds, args.events = 6, 50.0, 1.0, 100
    results = [run(count, args) for count in (1, 2, 3)]

    def fmt(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print("nodes  subs  same p50/p99 ms  cross p50/p99 ms  deliveries/s  per node CPU-s  ok")
    for r in results:
        print(
            f"{r['nodes']:>5}  {r['subscribers']:>4}  "
            f"{fmt(r['latency_same_p50_ms'])}/{fmt(r['latency_same_p99_ms']):<9}  "
            f"{fmt(r['latency_cross_p50_ms'])}/{fmt(r['latency_cross_p99_ms']):<10}  "
            f"{r['deliveries_per_s']:>12.0f}  {fmt(r['deliveries_per_node_cpu_s'], 0):>14}  "
            f"{r['in_order_exactly_once']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(r["in_order_exactly_once"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
