"""
Counters the router keeps for the metrics, shared with the sessions that
update them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class QueueCounters:
    """
    What the send queues of all sessions of a router did, for the metrics.

    @ivar conflated: queued events replaced by a newer one, by channel.
    @ivar slow_consumer_closes: sessions closed for letting the queue overflow.
    """

    conflated: Counter[str] = field(default_factory=Counter)
    slow_consumer_closes: int = 0
