"""
The value that travels from a publisher to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """
    One published event: what every wire dialect encodes for its subscribers.
    """

    channel: str
    data: Any
    timestamp: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """
    How one publish went on this node: frames handed to subscribers, and
    subscribers that could not take one.
    """

    delivered: int
    failed: int
