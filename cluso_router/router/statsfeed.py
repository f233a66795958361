"""
The C{router.stats} channel: what the router is doing, once per interval,
for dashboards that want to see a burst as it happens without scraping
C{/metrics}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from cluso_router._reactor import default_reactor
from cluso_router._time import TIMESTAMP_SCHEMA, iso_timestamp
from cluso_router.router.channels import ChannelClaim, ChannelSpec
from cluso_router.router.lag import ReactorLagProbe
from cluso_router.router.router import Router

DEFAULT_STATS_INTERVAL: Final = 1.0
#: Channels listed in one sample, the busiest first.
MAX_LISTED_CHANNELS: Final = 50

_COUNT = {"type": "integer", "minimum": 0}
_RATE = {"type": "number", "minimum": 0}


def _latest(data: Any) -> str:
    return "sample"


ROUTER_STATS: Final = ChannelSpec(
    "router.stats",
    "This node's connections, busiest channels and event rates, once per --stats-interval "
    "(sent only while someone subscribes; a reader that is behind gets the newest sample)",
    conflate=_latest,
    schema={
        "type": "object",
        "required": [
            "connections",
            "dialects",
            "channels",
            "channelCount",
            "published",
            "delivered",
            "eventsPerSecond",
            "deliveriesPerSecond",
            "reactorLagMs",
            "interval",
            "timestamp",
        ],
        "properties": {
            "connections": _COUNT,
            "dialects": {"type": "object", "additionalProperties": _COUNT},
            "channels": {
                "type": "array",
                "maxItems": MAX_LISTED_CHANNELS,
                "items": {
                    "type": "object",
                    "required": ["channel", "subscribers"],
                    "properties": {"channel": {"type": "string"}, "subscribers": _COUNT},
                },
            },
            "channelCount": _COUNT,
            "published": _COUNT,
            "delivered": _COUNT,
            "eventsPerSecond": _RATE,
            "deliveriesPerSecond": _RATE,
            "reactorLagMs": {
                "type": "object",
                "required": ["last", "max"],
                "properties": {"last": _RATE, "max": _RATE},
            },
            "interval": _RATE,
            "timestamp": TIMESTAMP_SCHEMA,
        },
    },
    examples=(
        {
            "connections": 12,
            "dialects": {"json": 10, "wamp": 2},
            "channels": [{"channel": "files", "subscribers": 3}],
            "channelCount": 7,
            "published": 1234,
            "delivered": 56789,
            "eventsPerSecond": 12.5,
            "deliveriesPerSecond": 340.0,
            "reactorLagMs": {"last": 0.4, "max": 3.1},
            "interval": 1.0,
            "timestamp": "2026-12-03T17:00:00.000Z",
        },
    ),
)


class RouterStatsFeed(TimerService):
    """
    Every C{interval} seconds, publish a sample of the router's counters on
    C{router.stats} to this node's subscribers. The sample is local (each
    node of a deployment speaks for itself), so it goes straight to this
    router, never over a backplane, and it is skipped while nobody listens.
    """

    name = "router-stats"

    def __init__(
        self,
        router: Router,
        probe: ReactorLagProbe,
        interval: float = DEFAULT_STATS_INTERVAL,
        clock: IReactorTime | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval, self.tick)
        self.clock: IReactorTime = clock if clock is not None else default_reactor()
        self._router = router
        self._probe = probe
        self.interval = interval
        self._wallclock = wallclock
        self._claim: ChannelClaim | None = None
        self._last: tuple[float, int, int] = (0.0, 0, 0)

    def startService(self) -> None:
        self._claim = self._router.claims.claim(ROUTER_STATS, "router")
        self._last = (self.clock.seconds(), *self._totals())
        super().startService()

    def stopService(self) -> Deferred[None]:
        if self._claim is not None:
            self._router.claims.release(self._claim)
            self._claim = None
        return super().stopService()  # type: ignore[no-any-return]

    def _totals(self) -> tuple[int, int]:
        return sum(self._router.published.values()), sum(self._router.delivered.values())

    def tick(self) -> None:
        """
        Take a sample; publish it when anyone subscribes to the channel.
        """
        now = self.clock.seconds()
        published, delivered = self._totals()
        then, published_before, delivered_before = self._last
        self._last = (now, published, delivered)
        lag_max = self._probe.take_window()
        if not self._router.matching_subscriptions(ROUTER_STATS.channel):
            return
        elapsed = max(now - then, 1e-9)
        self._router.publish(
            ROUTER_STATS.channel,
            self.sample(
                published,
                delivered,
                (published - published_before) / elapsed,
                (delivered - delivered_before) / elapsed,
                lag_max,
            ),
        )

    def sample(
        self,
        published: int,
        delivered: int,
        events_rate: float,
        deliveries_rate: float,
        lag_max: float,
    ) -> dict[str, Any]:
        counts = self._router.subscriber_counts()
        busiest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return {
            "connections": self._router.connection_count,
            "dialects": dict(self._router.dialects),
            "channels": [
                {"channel": channel, "subscribers": n}
                for channel, n in busiest[:MAX_LISTED_CHANNELS]
            ],
            "channelCount": len(counts),
            "published": published,
            "delivered": delivered,
            "eventsPerSecond": round(events_rate, 2),
            "deliveriesPerSecond": round(deliveries_rate, 2),
            "reactorLagMs": {
                "last": round(self._probe.last * 1000, 3),
                "max": round(max(lag_max, self._probe.last) * 1000, 3),
            },
            "interval": self.interval,
            "timestamp": iso_timestamp(self._wallclock()),
        }
