"""
The backplane's numbers for C{/metrics}, read on scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cluso_router.interfaces import IBackplane


class BackplaneCollector:
    """
    C{cluso_backplane_up} for every backplane; the Redis backplane's
    counters when it has them.
    """

    def __init__(self, backplane: IBackplane) -> None:
        self._backplane = backplane

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        backplane = self._backplane
        yield GaugeMetricFamily(
            "cluso_backplane_up",
            "1 while the backplane reaches the other nodes, 0 while degraded.",
            value=1 if backplane.backplane_status == "ok" else 0,
        )
        counters = (
            ("connects", "cluso_backplane_connects", "Connections made to Redis, first included."),
            (
                "publish_failures",
                "cluso_backplane_publish_failures",
                "Publishes refused because Redis could not be reached.",
            ),
            (
                "gap_closes",
                "cluso_backplane_gap_closes",
                "Sessions closed with 4009 because events they missed were gone from Redis.",
            ),
            (
                "replayed",
                "cluso_backplane_replayed_events",
                "Events replayed from Redis Streams to local subscribers after reconnecting.",
            ),
        )
        for attribute, name, documentation in counters:
            value = getattr(backplane, attribute, None)
            if value is not None:
                yield CounterMetricFamily(name, documentation, value=value)
