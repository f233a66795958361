"""
Timestamps in the form the original server's clients parse.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Final

_second: tuple[int | None, str] = (None, "")


def iso_timestamp(seconds: float | None = None) -> str:
    """
    Format POSIX C{seconds} (default: now) like JavaScript's
    C{Date.prototype.toISOString}: UTC, exactly three fractional digits, C{Z}.

    Rounds to microseconds as C{datetime.fromtimestamp} does, and formats
    the whole second once per second rather than once per call.
    """
    global _second
    if seconds is None:
        seconds = time.time()
    whole = math.floor(seconds)
    micro = round((seconds - whole) * 1e6)
    if micro >= 1_000_000:
        whole += 1
        micro -= 1_000_000
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)))
    return f"{_second[1]}{micro // 1000:03d}Z"


#: JSON Schema of what L{iso_timestamp} returns.
TIMESTAMP_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
    "description": "UTC, exactly three fractional digits, Z (JavaScript's toISOString)",
}
