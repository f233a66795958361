"""
Timestamps are formatted exactly as JavaScript's toISOString would.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from cluso_router._time import iso_timestamp


def reference(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_matches_datetime_formatting_including_second_boundaries() -> None:
    """
    The cached-second formatter gives the same text as formatting each
    moment with datetime, for random moments and for moments a hair before
    and after whole seconds (where rounding to microseconds carries over).
    """
    rng = random.Random(7)
    moments = [rng.uniform(0, 4_102_444_800) for _ in range(20_000)]
    for whole in (0, 1733758245, 1733758246, 4_102_444_799):
        moments += [whole - 1e-7, whole - 4e-7, whole - 6e-7, whole, whole + 4e-7, whole + 0.9995]
    for seconds in sorted(moments) + moments:
        assert iso_timestamp(seconds) == reference(seconds), seconds


def test_known_value() -> None:
    """
    A known moment formats with exactly three fractional digits and Z.
    """
    assert iso_timestamp(1733758245.123) == "2024-12-09T15:30:45.123Z"
