"""
Search with progress on a generated tree of 10,000 files.

Runs cluso-router as a child process (python -m cluso_router --sources
search) and a WebSocket client here, subscribed to the search channel. For
a rare query (20 matches) and a common one (capped at the default
maxResults, 1,000) it measures, from sending invoke search.start: the reply
with the search id, the first search_progress event and the final event;
files searched per second follow. The baseline in the same run is ripgrep
alone on the same tree (rg --json QUERY, time to exit), the least any
ripgrep-based search can cost. Prints medians over several runs.

--engine python measures the pure-Python engine (cluso_grep) that stands in
for ripgrep where none is installed; the baseline stays ripgrep.

    python bench/search.py [--files 10000] [--runs 7] [--engine auto|ripgrep|python]
                           [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater, react

from cluso_router.sources.search.tools import find_ripgrep
from cluso_router.testing import WebSocketTestClient, connect_client

REPO = Path(__file__).resolve().parent.parent
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "def", "class", "yield", "lambda")
#: label -> (query, maxResults)
QUERIES = {"rare": ("zanzibar", 100_000), "common": ("lambda", 1000)}
_LISTENING = re.compile(r"listening on (http://\S+/)")


def generate(root: Path, files: int, seed: int = 7) -> int:
    """
    C{files} Python-like files of 40 lines in 50 x 7 directories; one in
    500 mentions the rare word. Returns the number of rare matches.
    """
    rng = random.Random(seed)
    rare = 0
    for n in range(files):
        directory = root / f"pkg{n % 50:02d}" / f"mod{n % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(40)]
        if n % 500 == 0:
            lines[n % 40] += f" {QUERIES['rare'][0]}"
            rare += 1
        (directory / f"file{n:05d}.py").write_text("\n".join(lines) + "\n")
    return rare


def ripgrep_alone(rg: str, root: Path, query: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [rg, "--no-config", "--json", "--ignore-case", "--fixed-strings", "--", query],
        cwd=root,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - started


async def start_server(
    reactor: Any, root: Path, log: Path, engine: str
) -> tuple[subprocess.Popen[bytes], str]:
    """
    The server as a child process, and its URL once it listens.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "cluso_router", "--listen", "tcp:0:interface=127.0.0.1"]
    argv += ["--auth", "none", "--sources", "search", "--root", str(root)]
    argv += ["--search-engine", engine]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    for _ in range(300):
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
        await deferLater(reactor, 0.05)
    process.kill()
    sys.exit("server did not start:\n" + log.read_text(errors="replace"))


async def one_search(
    client: WebSocketTestClient, query: str, max_results: int, n: int
) -> dict[str, Any]:
    started = time.perf_counter()
    client.send_json(
        {
            "type": "invoke",
            "id": n,
            "channel": "search.start",
            "data": {"query": query, "maxResults": max_results},
        }
    )
    reply_at = first_at = None
    search_id = None
    events = results = 0
    while True:
        message = await client.next_message(timeout=60)
        now = time.perf_counter() - started
        if message.get("type") == "response" and message.get("id") == n:
            if "error" in message:
                raise RuntimeError(message["error"])
            reply_at, search_id = now, message["data"]["searchId"]
            continue
        if message.get("type") != "event":
            continue
        data = message["data"]
        if data["searchId"] != search_id:
            continue
        events += 1
        results += len(data["results"])
        if first_at is None:
            first_at = now
        if data["done"]:
            return {
                "reply": reply_at,
                "first": first_at,
                "done": now,
                "events": events,
                "results": results,
                "files": data["completed"],
                "total": data["total"],
                "truncated": data["truncated"],
            }


async def measure(reactor: Any, args: argparse.Namespace) -> None:
    rg = find_ripgrep()
    if rg is None:
        sys.exit("ripgrep (rg) is not installed")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "tree"
        root.mkdir()
        started = time.perf_counter()
        rare = generate(root, args.files)
        print(f"{args.files} files generated in {time.perf_counter() - started:.1f} s")
        process, url = await start_server(reactor, root, Path(scratch) / "server.log", args.engine)
        report: dict[str, Any] = {
            "files": args.files,
            "runs": args.runs,
            "engine": args.engine,
            "queries": {},
        }
        try:
            client = await connect_client("ws" + url[4:] + "ws")
            await client.next_message()
            await client.request({"type": "subscribe", "channel": "search", "id": "s"})
            for label, (query, max_results) in QUERIES.items():
                runs = [await one_search(client, query, max_results, n) for n in range(args.runs)]
                alone = [ripgrep_alone(rg, root, query) for _ in range(args.runs)]
                if label == "rare":
                    assert all(r["results"] == rare for r in runs), runs
                    assert all(r["files"] == r["total"] == args.files for r in runs), runs
                else:
                    assert all(r["results"] == max_results and r["truncated"] for r in runs), runs
                summary = {
                    key: statistics.median(r[key] for r in runs)
                    for key in ("reply", "first", "done", "events", "results", "files")
                }
                summary["worstFirst"] = max(r["first"] for r in runs)
                summary["ripgrep"] = statistics.median(alone)
                summary["filesPerSecond"] = (
                    summary["files"] / summary["done"] if label == "rare" else None
                )
                summary["ratio"] = summary["done"] / summary["ripgrep"]
                report["queries"][label] = {"query": query, "maxResults": max_results, **summary}
            await client.close()
        finally:
            process.terminate()
            process.wait(10)
    print(f"medians of {args.runs} runs, {args.files} files, engine {args.engine}")
    print(
        f"  {'query':7s} {'results':>7s} {'files':>6s} {'events':>6s} {'reply':>8s}"
        f" {'first':>8s} {'(worst)':>8s} {'done':>8s} {'files/s':>8s} {'rg alone':>8s}"
        f" {'ratio':>6s}"
    )
    for label, q in report["queries"].items():
        print(
            f"  {label:7s} {q['results']:7.0f} {q['files']:6.0f} {q['events']:6.0f}"
            f" {q['reply'] * 1e3:6.1f}ms {q['first'] * 1e3:6.1f}ms {q['worstFirst'] * 1e3:6.1f}ms"
            f" {q['done'] * 1e3:6.0f}ms {q['filesPerSecond'] or 0:8.0f}"
            f" {q['ripgrep'] * 1e3:6.0f}ms {q['ratio']:6.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--engine", default="auto", help="the server's --search-engine")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--quick", action="store_true", help="1,000 files, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.files, args.runs = 1000, 2
    react(lambda reactor: ensureDeferred(measure(reactor, args)))


if __name__ == "__main__":
    main()
