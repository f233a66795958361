"""
Where the memory of an idle subscribed connection goes, for cluso-router and
the naive Autobahn baseline.

The server runs in this process (so its objects can be looked at) with
tracemalloc on; the Node load client of the fan-out benchmark opens the
connections from a child process. Between C{--base} and C{--base + --n}
subscribed connections it reports, per connection: the Python heap growth
by allocation site and by source file, the new objects by type, and the
attributes of one protocol instance with their sizes. tracemalloc's own
bookkeeping inflates RSS here, so RSS per connection comes from
C{bench/fanout.py}, which runs the server untraced.

    python bench/memory_breakdown.py [--server cluso-router|naive-autobahn] [--n 2000]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

BENCH = Path(__file__).resolve().parent
TOKEN = "memory-breakdown-token"
reactor: Any = _reactor


class LoadClient(ProcessProtocol):
    """
    The Node load client, driven with one JSON command per line.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._waiting: list[Deferred[dict[str, Any]]] = []
        self.ready: Deferred[dict[str, Any]] = Deferred()
        self._waiting.append(self.ready)
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            answer = json.loads(line)
            waiting = self._waiting.pop(0)
            if "error" in answer:
                waiting.errback(RuntimeError(answer["error"]))
            else:
                waiting.callback(answer)

    def errReceived(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)

    def request(self, command: dict[str, Any]) -> Deferred[dict[str, Any]]:
        answer: Deferred[dict[str, Any]] = Deferred()
        self._waiting.append(answer)
        assert self.transport is not None
        self.transport.write(json.dumps(command).encode() + b"\n")
        return answer

    def processEnded(self, reason: Failure) -> None:
        for waiting in self._waiting:
            waiting.errback(RuntimeError("load client exited"))
        self._waiting = []
        self.ended.callback(None)


def start_cluso(root: str) -> tuple[Any, str]:
    from cluso_router.tap import Options, makeService

    os.environ["CLUSO_TOKEN"] = TOKEN
    options = Options()
    options.parseOptions(
        [
            "--listen",
            "tcp:0:interface=127.0.0.1:backlog=1024",
            "--root",
            root,
            "--ping-interval",
            "3600",
        ]
    )
    service = makeService(options)
    service.startService()
    port = service.port.getHost().port
    return service, f"ws://127.0.0.1:{port}/ws?token={TOKEN}"


def start_naive() -> tuple[Any, str]:
    spec = importlib.util.spec_from_file_location(
        "naive_autobahn", BENCH / "baselines" / "naive_autobahn.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    port = reactor.listenTCP(0, module.NaiveFactory(), backlog=1024, interface="127.0.0.1")
    return port, f"ws://127.0.0.1:{port.getHost().port}/"


def object_types() -> Counter[str]:
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def find_protocol(server: str) -> Any:
    wanted = "ClusoServerProtocol" if server == "cluso-router" else "NaiveProtocol"
    for candidate in gc.get_objects():
        if type(candidate).__name__ == wanted and getattr(candidate, "state", None) == 3:
            return candidate
    return None


def deep_size(value: Any, depth: int = 2) -> int:
    """
    C{sys.getsizeof} of C{value} plus, a few levels down, of what it holds
    (shared objects are counted every time, so this is an upper bound).
    """
    size = sys.getsizeof(value)
    if depth == 0:
        return size
    if isinstance(value, dict):
        size += sum(deep_size(k, 0) + deep_size(v, depth - 1) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        size += sum(deep_size(v, depth - 1) for v in value)
    return size


def fields(instance: Any) -> dict[str, Any]:
    """
    The instance attributes of C{instance}: its slots and its C{__dict__}.
    """
    names = [n for cls in type(instance).__mro__ for n in getattr(cls, "__slots__", ())]
    found = {n: getattr(instance, n) for n in names if n != "__dict__" and hasattr(instance, n)}
    if hasattr(instance, "__dict__"):
        found.update(vars(instance))
    return found


def own_size(instance: Any) -> int:
    """
    The instance itself plus its C{__dict__}, if it has one.
    """
    size = sys.getsizeof(instance)
    return size + sys.getsizeof(vars(instance)) if hasattr(instance, "__dict__") else size


def attributes(instance: Any) -> list[tuple[str, str, int]]:
    found = []
    for name, value in fields(instance).items():
        if isinstance(value, int | float | bool | type(None)) or callable(value):
            shown = 0
        else:
            shown = deep_size(value)
        found.append((name, type(value).__name__, shown))
    return sorted(found, key=lambda item: -item[2])


async def measure(server: str, base: int, n: int, top: int) -> None:
    scratch = tempfile.mkdtemp(prefix="cluso-memory-")
    if server == "cluso-router":
        running, url = start_cluso(scratch)
    else:
        running, url = start_naive()
    client = LoadClient()
    reactor.spawnProcess(
        client, "node", ["node", str(BENCH / "loadclient.js"), url, "bench"], env=os.environ
    )
    try:
        await client.ready
        await client.request({"cmd": "connect", "n": base})
        gc.collect()
        before, types_before = tracemalloc.take_snapshot(), object_types()
        await client.request({"cmd": "connect", "n": base + n})
        gc.collect()
        after, types_after = tracemalloc.take_snapshot(), object_types()
        protocol = find_protocol(server)
        report(server, n, before, after, types_before, types_after, protocol, top)
        await client.request({"cmd": "quit"})
        await client.ended
    finally:
        stop = getattr(running, "stopService", None) or running.stopListening
        await stop()


def report(
    server: str,
    n: int,
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    types_before: Counter[str],
    types_after: Counter[str],
    protocol: Any,
    top: int,
) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    by_line = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in by_line)
    print(f"\n{server}: Python heap per idle subscribed connection: {total / n:,.0f} bytes")
    print(f"\nby source file (bytes per connection, top {top})")
    for stat in after.compare_to(before, "filename")[:top]:
        if stat.size_diff / n >= 8:
            print(f"{stat.size_diff / n:>8,.0f}  {stat.traceback[0].filename}")
    print(f"\nby allocation site (bytes per connection, top {top})")
    for stat in by_line[:top]:
        if stat.size_diff / n >= 8:
            frame = stat.traceback[0]
            print(f"{stat.size_diff / n:>8,.0f}  {frame.filename}:{frame.lineno}")
    print("\nnew objects per connection, by type")
    grown = types_after - types_before
    for name, count in grown.most_common(top):
        if count / n >= 0.5:
            print(f"{count / n:>8.2f}  {name}")
    if protocol is None:
        return
    print(
        f"\none {type(protocol).__name__}: {len(fields(protocol))} instance attributes,"
        f" {own_size(protocol)} bytes with its __dict__; largest attributes:"
    )
    for name, kind, size in attributes(protocol)[:top]:
        if size:
            print(f"{size:>8,}  {name} ({kind})")
    transport = protocol.transport
    print(f"transport: {type(transport).__module__}.{type(transport).__qualname__}")
    session = getattr(protocol, "session", None)
    if session is not None:
        print(f"\nits session ({type(session).__name__}): {own_size(session)} bytes")
        for name, kind, size in attributes(session)[:top]:
            if size:
                print(f"{size:>8,}  {name} ({kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", choices=("cluso-router", "naive-autobahn"), default="cluso-router"
    )
    parser.add_argument(
        "--base", type=int, default=100, help="connections before the first snapshot"
    )
    parser.add_argument("--n", type=int, default=2000, help="connections added between snapshots")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    tracemalloc.start()
    failures: list[Failure] = []

    def done(result: object) -> None:
        if isinstance(result, Failure):
            failures.append(result)
        reactor.stop()

    reactor.callWhenRunning(
        lambda: ensureDeferred(measure(args.server, args.base, args.n, args.top)).addBoth(done)
    )
    reactor.run()
    if failures:
        failures[0].raiseException()


if __name__ == "__main__":
    main()
