"""
The value that travels from a publisher to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluso_router._json import JSONError, dumps
from cluso_router.router.channels import channel_problem


class InvalidEvent(ValueError):
    """
    An event refused before it was numbered: a bad channel name, or data
    that is not strict JSON (see L{cluso_router._json}).
    """

    code = "invalid_event"


def encode_data(channel: str, data: Any) -> bytes:
    """
    The strict JSON of C{data}, checked with C{channel} before an event is
    numbered, kept or sent, so a bad one never takes a C{seq} or reaches
    a history.

    @raise InvalidEvent: saying what is wrong.
    """
    problem = channel_problem(channel)
    if problem is not None:
        raise InvalidEvent(problem)
    try:
        return dumps(data)
    except JSONError as e:
        raise InvalidEvent(f"event data is not valid JSON: {e}") from None


@dataclass(frozen=True, slots=True)
class Event:
    """
    One published event: what every wire dialect encodes for its subscribers.

    @ivar encoded: the strict JSON of C{data}, when the publisher made it
        (dialects that speak JSON reuse it instead of encoding again).
    """

    channel: str
    data: Any
    timestamp: str
    seq: int | None = None
    encoded: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """
    How one publish went on this node: frames handed to subscribers, and
    subscribers that could not take one.
    """

    delivered: int
    failed: int
