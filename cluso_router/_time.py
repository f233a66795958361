"""
Timestamps in the form the original server's clients parse.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso_timestamp(seconds: float | None = None) -> str:
    """
    Format POSIX C{seconds} (default: now) like JavaScript's
    C{Date.prototype.toISOString}: UTC, exactly three fractional digits, C{Z}.
    """
    if seconds is None:
        seconds = time.time()
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
