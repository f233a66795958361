"""
The file watcher: write-to-event latency, start-up on a large tree, and a
burst of creations.

- Latency: cluso-router runs as a child process (python -m cluso_router
  --sources files) on a temporary root; a WebSocket client here, subscribed
  to files, times each write (alternately a new file and a rewrite of an
  existing one, 200 in all) until its event arrives. The baseline in the same
  run is a bare watchdog observer in this process on the same root: the time
  from the same write to its first watchdog callback, the floor any
  watchdog-based watcher starts from. Coalescing adds its quiet delay
  (--watch-delay, 50 ms by default) on top by design.
- Start-up: a tree of 10,000 files in 110 directories; the time from
  starting the files source (in this process) until its watches are in
  place and the tree is read. Baselines: a recursive watchdog schedule of
  the same tree, and a plain os.walk with a stat of every entry.
- Burst: 1,000 files created as fast as possible in a new directory; the
  time until the client has an add event for every one of them.

    python bench/watcher.py [--writes 200] [--files 10000] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from cluso_router.sources.files import FileWatcher
from cluso_router.testing import WebSocketTestClient, connect_client

_LISTENING = re.compile(r"listening on (http://\S+/)")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def start_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cluso_router",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--auth",
            "none",
            "--sources",
            "files",
            "--root",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = _LISTENING.search(line)
        if match:
            url = match.group(1)
            return process, "ws" + url[4:] + "ws"
    raise RuntimeError("cluso-router did not start")


def drain(process: subprocess.Popen[str]) -> threading.Thread:
    """
    Keep reading the server's log so it never blocks on a full pipe; wait
    for its "Watching" line through the returned thread's event.
    """
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "Watching " in line:
                ready.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the file watcher did not become ready")
    return thread


class FirstSeen(FileSystemEventHandler):
    """
    The baseline: when watchdog first reported each path (in its thread).
    """

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        now = time.monotonic()
        path = os.fsdecode(event.src_path)
        with self.lock:
            self.seen.setdefault(path, now)

    def forget(self, path: str) -> None:
        with self.lock:
            self.seen.pop(path, None)

    def first(self, path: str) -> float | None:
        with self.lock:
            return self.seen.get(path)


async def next_file_event(client: WebSocketTestClient, name: str) -> tuple[str, float]:
    while True:
        message = await client.next_message(10)
        if message.get("channel") == "files" and message["data"]["file"] == name:
            return message["data"]["event"], time.monotonic()


async def measure_latency(reactor: Any, root: Path, writes: int) -> dict[str, Any]:
    process, ws_url = start_server(root)
    observer = Observer()
    baseline = FirstSeen()
    try:
        drain(process)
        observer.schedule(baseline, str(root), recursive=False)
        observer.start()
        client = await connect_client(ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "files", "id": 1})
        cluso: list[float] = []
        raw: list[float] = []
        kinds: dict[str, int] = {}
        for i in range(writes):
            name = f"file-{i // 2}.txt"
            path = root / name
            baseline.forget(str(path))
            await deferLater(reactor, 0.02, lambda: None)
            started = time.monotonic()
            path.write_text(f"write {i}\n" * (i + 1))
            kind, arrived = await next_file_event(client, name)
            kinds[kind] = kinds.get(kind, 0) + 1
            cluso.append(arrived - started)
            first = baseline.first(str(path))
            if first is not None:
                raw.append(first - started)
        await client.close()
    finally:
        observer.stop()
        observer.join()
        process.terminate()
        process.wait(10)
    return {
        "writes": writes,
        "events": kinds,
        "cluso_p50_ms": percentile(cluso, 0.5) * 1000,
        "cluso_p99_ms": percentile(cluso, 0.99) * 1000,
        "watchdog_p50_ms": percentile(raw, 0.5) * 1000,
        "watchdog_p99_ms": percentile(raw, 0.99) * 1000,
    }


async def measure_burst(root: Path, count: int) -> dict[str, Any]:
    process, ws_url = start_server(root)
    try:
        drain(process)
        client = await connect_client(ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "files", "id": 1})
        names = {f"burst/f{i:05}.txt" for i in range(count)}

        def create() -> None:
            (root / "burst").mkdir()
            for name in sorted(names):
                (root / name).write_text(name)

        started = time.monotonic()
        written = deferToThread(create)
        pending = set(names)
        while pending:
            message = await client.next_message(30)
            if message.get("channel") == "files" and message["data"]["event"] == "add":
                pending.discard(message["data"]["file"])
        await written
        elapsed = time.monotonic() - started
        await client.close()
    finally:
        process.terminate()
        process.wait(10)
    return {"files": count, "all_announced_s": elapsed}


def make_tree(root: Path, files: int) -> int:
    """
    C{files} files in 10 top-level directories of 10 subdirectories each.
    """
    per_directory = max(1, files // 100)
    made = 0
    for top in range(10):
        for sub in range(10):
            directory = root / f"pkg{top}" / f"mod{sub}"
            directory.mkdir(parents=True)
            for n in range(per_directory):
                (directory / f"file{n}.py").write_text(f"# {top}/{sub}/{n}\n")
                made += 1
    return made


async def measure_startup(reactor: Any, root: Path, runs: int) -> dict[str, Any]:
    cluso, schedule, walk = [], [], []
    for _ in range(runs):
        watcher = FileWatcher(str(root), lambda path, event: None, reactor)
        started = time.monotonic()
        watcher.startService()
        await watcher.when_ready()
        cluso.append(time.monotonic() - started)
        await watcher.stopService()

        observer = Observer()
        observer.start()
        started = time.monotonic()
        observer.schedule(FileSystemEventHandler(), str(root), recursive=True)
        schedule.append(time.monotonic() - started)
        observer.stop()
        observer.join()

        started = time.monotonic()
        for top, dirs, names in os.walk(root):
            for name in dirs + names:
                os.lstat(os.path.join(top, name))
        walk.append(time.monotonic() - started)
    return {
        "runs": runs,
        "cluso_ready_s": statistics.median(cluso),
        "watchdog_recursive_schedule_s": statistics.median(schedule),
        "os_walk_and_stat_s": statistics.median(walk),
    }


async def main(reactor: Any, options: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="cluso-bench-watcher-"))
    try:
        results: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
        (base / "latency").mkdir()
        results["latency"] = await measure_latency(reactor, base / "latency", options.writes)
        tree = base / "tree"
        tree.mkdir()
        results["tree_files"] = make_tree(tree, options.files)
        results["startup"] = await measure_startup(reactor, tree, options.runs)
        (base / "burst").mkdir()
        results["burst"] = await measure_burst(base / "burst", options.burst)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    latency, startup, burst = results["latency"], results["startup"], results["burst"]
    print(f"write -> event over {latency['writes']} writes ({latency['events']}):")
    print(
        f"  cluso-router client  p50 {latency['cluso_p50_ms']:.1f} ms  "
        f"p99 {latency['cluso_p99_ms']:.1f} ms"
    )
    print(
        f"  bare watchdog        p50 {latency['watchdog_p50_ms']:.1f} ms  "
        f"p99 {latency['watchdog_p99_ms']:.1f} ms"
    )
    print(f"start-up on {results['tree_files']} files (median of {startup['runs']}):")
    print(f"  cluso-router ready             {startup['cluso_ready_s']:.3f} s")
    print(f"  watchdog recursive schedule    {startup['watchdog_recursive_schedule_s']:.3f} s")
    print(f"  os.walk + lstat                {startup['os_walk_and_stat_s']:.3f} s")
    print(f"burst of {burst['files']} creations: all announced in {burst['all_announced_s']:.2f} s")
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--json")
    react(lambda reactor: ensureDeferred(main(reactor, parser.parse_args())))
