"""
C{GET /metrics}: the router's numbers in the Prometheus text format.

Nothing is counted twice: the router, its sessions and the ping sweeper
keep plain counters as they work, and L{RouterCollector} reads them when
Prometheus scrapes, so serving metrics adds no cost to delivering events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.router.lag import ReactorLagProbe
from cluso_router.router.liveness import PingSweeper
from cluso_router.router.router import FANOUT_BUCKETS, MAX_COUNTED_CHANNELS, OTHER_CHANNELS, Router


class RouterCollector:
    """
    Collects a router's (and optionally a ping sweeper's) metrics on scrape.
    """

    def __init__(
        self,
        router: Router,
        sweeper: PingSweeper | None = None,
        lag: ReactorLagProbe | None = None,
    ) -> None:
        self._router = router
        self._sweeper = sweeper
        self._lag = lag

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        router = self._router
        yield GaugeMetricFamily(
            "cluso_connections",
            "Open sessions: WebSocket connections and MCP sessions.",
            value=router.connection_count,
        )
        sessions = GaugeMetricFamily(
            "cluso_sessions", "Open sessions by dialect (json, wamp, mcp).", labels=["dialect"]
        )
        for dialect, count in sorted(router.dialects.items()):
            sessions.add_metric([dialect], count)
        yield sessions
        yield _by_channel(
            GaugeMetricFamily(
                "cluso_subscriptions", "Sessions subscribed to each channel.", labels=["channel"]
            ),
            router.subscriber_counts(),
        )
        yield _by_channel(
            CounterMetricFamily(
                "cluso_events_published", "Events published, by channel.", labels=["channel"]
            ),
            router.published,
        )
        yield _by_channel(
            CounterMetricFamily(
                "cluso_events_delivered",
                "Event frames handed to subscribers, by channel.",
                labels=["channel"],
            ),
            router.delivered,
        )
        dropped = CounterMetricFamily(
            "cluso_events_dropped",
            "Events a subscriber did not get: refused by a closing connection (failed) "
            "or replaced in a slow client's queue by a newer one (conflated).",
            labels=["channel", "reason"],
        )
        for reason, counts in (
            ("failed", router.failed),
            ("conflated", router.queue_counters.conflated),
        ):
            for channel, count in _capped(counts):
                dropped.add_metric([channel, reason], count)
        yield dropped
        yield CounterMetricFamily(
            "cluso_slow_consumer_closes",
            "Connections closed with 4008 because their send queue overflowed.",
            value=router.queue_counters.slow_consumer_closes,
        )
        closes = CounterMetricFamily(
            "cluso_server_closes",
            "WebSocket connections this server closed, by close code.",
            labels=["code"],
        )
        for code, count in sorted(router.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        refusals = CounterMetricFamily(
            "cluso_refusals",
            "HTTP requests and WebSocket handshakes refused, by reason "
            "(host, origin, token, capacity).",
            labels=["reason"],
        )
        for reason, count in sorted(router.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        yield CounterMetricFamily(
            "cluso_messages_rate_limited",
            "Inbound WebSocket messages refused with rate_limited.",
            value=router.rate_limited,
        )
        queued = [getattr(s, "queued_bytes", 0) for s in router.sessions()]
        yield GaugeMetricFamily(
            "cluso_queue_bytes",
            "Bytes waiting in the send queues of clients that are behind.",
            value=sum(queued),
        )
        yield GaugeMetricFamily(
            "cluso_queue_bytes_max",
            "The longest send queue, in bytes.",
            value=max(queued, default=0),
        )
        problems = GaugeMetricFamily(
            "cluso_problems",
            "Parts of the server that do not work (1 each), such as an event source that "
            "failed to start; /api/health says why.",
            labels=["part"],
        )
        for part in sorted(router.problems):
            problems.add_metric([part], 1)
        yield problems
        yield from self._history()
        yield self._fanout()
        if self._sweeper is not None:
            yield from self._sweeps(self._sweeper)
        if self._lag is not None:
            yield GaugeMetricFamily(
                "cluso_reactor_lag_seconds",
                "How late the reactor ran its last probe timer.",
                value=self._lag.last,
            )
            yield GaugeMetricFamily(
                "cluso_reactor_lag_max_seconds",
                "The worst reactor lateness since the server started.",
                value=self._lag.worst,
            )
        yield CounterMetricFamily(
            "cluso_writes_joined",
            "Frames that left in one write with others of their burst.",
            value=router.writes.joined,
        )

    def _history(self) -> Iterator[Metric]:
        history = self._router.history
        yield GaugeMetricFamily(
            "cluso_history_bytes",
            "Bytes of events kept for recovery (their JSON plus a fixed overhead each).",
            value=history.kept_bytes,
        )
        yield GaugeMetricFamily(
            "cluso_history_channels", "Channels with a position kept.", value=history.channel_count
        )
        yield CounterMetricFamily(
            "cluso_history_evicted_bytes",
            "Bytes of kept events dropped to stay within the history's byte budget.",
            value=history.evicted_bytes,
        )
        yield CounterMetricFamily(
            "cluso_history_unkept",
            "Events delivered but not kept: bigger than the per-event limit.",
            value=history.unkept,
        )

    def _fanout(self) -> Metric:
        router = self._router
        buckets = []
        cumulative = 0
        for bound, count in zip(FANOUT_BUCKETS, router.fanout_counts, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + router.fanout_counts[-1]))
        return HistogramMetricFamily(
            "cluso_fanout_seconds",
            "Time to hand one event to every subscriber on this node.",
            buckets=buckets,
            sum_value=router.fanout_seconds,
        )

    @staticmethod
    def _sweeps(sweeper: PingSweeper) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "cluso_ping_sweep_seconds",
            "How long the last ping sweep over all connections took.",
            value=sweeper.last_sweep_seconds,
        )
        yield GaugeMetricFamily(
            "cluso_ping_sweep_longest_slice_seconds",
            "The longest reactor turn one slice of a ping sweep took since the start.",
            value=sweeper.longest_slice_seconds,
        )
        yield CounterMetricFamily("cluso_ping_sweeps", "Ping sweeps run.", value=sweeper.sweeps)
        yield CounterMetricFamily(
            "cluso_ping_dropped",
            "Connections dropped by a sweep for not answering pings.",
            value=sweeper.dropped,
        )


def _capped(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """
    C{counts} with at most L{MAX_COUNTED_CHANNELS} named channels, the
    smallest folded into L{OTHER_CHANNELS}, so a scrape stays small.
    """
    named = [(channel, n) for channel, n in counts.items() if channel != OTHER_CHANNELS]
    if len(named) <= MAX_COUNTED_CHANNELS:
        return sorted(counts.items())
    named.sort(key=lambda item: item[1], reverse=True)
    kept = dict(named[:MAX_COUNTED_CHANNELS])
    kept[OTHER_CHANNELS] = counts.get(OTHER_CHANNELS, 0) + sum(
        n for _, n in named[MAX_COUNTED_CHANNELS:]
    )
    return sorted(kept.items())


def _by_channel(
    family: GaugeMetricFamily | CounterMetricFamily, counts: Mapping[str, int]
) -> Metric:
    for channel, count in _capped(counts):
        family.add_metric([channel], count)
    return family


def metrics_registry(
    router: Router, sweeper: PingSweeper | None = None, lag: ReactorLagProbe | None = None
) -> CollectorRegistry:
    """
    A registry with the router's metrics and the process's (memory, CPU,
    open files).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(router, sweeper, lag))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """
    Serves one registry in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)

    render_HEAD = render_GET
