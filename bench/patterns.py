"""
Publish cost with many pattern subscriptions.

Measures Router.publish to a channel with 10 exact subscribers while 0 or
10,000 prefix and 10,000 wildcard subscriptions exist (a few of which
match), against a naive matcher that tests every pattern on every publish.
Prints medians of several runs and the ratios. In-process, fake sessions:
this isolates the matching cost from the network.

    python bench/patterns.py [--patterns 10000] [--publishes 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from twisted.internet.task import Clock

from cluso_router.router.router import Router
from cluso_router.testing import FakeSession


class NullSession(FakeSession):
    def deliver(self, frame: bytes) -> bool:
        return True


def build_router(patterns: int) -> Router:
    router = Router(clock=Clock())
    for _ in range(10):
        session = NullSession()
        router.register_session(session)
        router.subscribe(session, "build.web.done")
    for n in range(patterns):
        session = NullSession()
        router.register_session(session)
        router.subscribe(session, f"team{n}.build.", "prefix")
        router.subscribe(session, f"team{n}..done", "wildcard")
    matching = NullSession()
    router.register_session(matching)
    router.subscribe(matching, "build.", "prefix")
    router.subscribe(matching, "build..done", "wildcard")
    return router


def naive_matches(patterns: list[tuple[str, str]], channel: str) -> list[str]:
    parts = channel.split(".")
    found = []
    for match, pattern in patterns:
        if match == "prefix":
            if channel.startswith(pattern):
                found.append(pattern)
        else:
            components = pattern.split(".")
            if len(components) == len(parts) and all(
                c == "" or c == p for c, p in zip(components, parts, strict=True)
            ):
                found.append(pattern)
    return found


def time_publishes(router: Router, publishes: int) -> float:
    started = time.perf_counter()
    for n in range(publishes):
        router.publish("build.web.done", n)
    return (time.perf_counter() - started) / publishes


def time_naive(patterns: int, publishes: int) -> float:
    table = [("prefix", f"team{n}.build.") for n in range(patterns)]
    table += [("wildcard", f"team{n}..done") for n in range(patterns)]
    runs = max(1, publishes // 100)
    started = time.perf_counter()
    for _ in range(runs):
        naive_matches(table, "build.web.done")
    return (time.perf_counter() - started) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--patterns", type=int, default=10_000)
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    results: dict[str, list[float]] = {"2 patterns": [], "indexed": [], "naive scan": []}
    plain, indexed = build_router(0), build_router(args.patterns)
    for _ in range(args.runs):
        results["2 patterns"].append(time_publishes(plain, args.publishes))
        results["indexed"].append(time_publishes(indexed, args.publishes))
        results["naive scan"].append(time_naive(args.patterns, args.publishes))
    medians: dict[str, Any] = {k: statistics.median(v) for k, v in results.items()}
    base = medians["2 patterns"]
    print(f"{args.patterns} prefix + {args.patterns} wildcard subscriptions, 11 receivers")
    for name, value in medians.items():
        print(f"  {name:12s} {value * 1e6:9.2f} us/publish   {value / base:7.2f}x")


if __name__ == "__main__":
    main()
