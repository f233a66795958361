"""
Publishing for event sources: the payload as given, or stamped with its
ISO timestamp as the original server's payloads are.

Typed helpers for each built-in channel live with the part that owns the
channel (C{cluso_router.workspace.ledger.file_changed},
C{cluso_router.sources.lsp.events.diagnostics_updated}, ...); a third-party
source writes its own the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._time import iso_timestamp
from cluso_router.interfaces import IPublisher
from cluso_router.router.event import DeliveryReport


class Broadcaster:
    """
    Publishes events through any L{IPublisher} (the router, or a backplane
    in front of it) and never raises for a publish that fails later.
    """

    log = Logger()

    def __init__(self, publisher: IPublisher, wallclock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._wallclock = wallclock

    def emit_stamped(self, channel: str, payload: Mapping[str, Any]) -> DeliveryReport:
        """
        Publish C{payload} on C{channel} with its own C{timestamp} field
        added, as each payload of the original server's channels carries.
        """
        return self._publish(channel, {**payload, "timestamp": iso_timestamp(self._wallclock())})

    def _publish(self, channel: str, data: Any) -> DeliveryReport:
        """
        Publish through the publisher. A backplane answers later, and may
        fail (Redis unreachable): event sources fire and forget, so the
        failure is logged here and reported as one failed delivery instead
        of becoming an unhandled error.
        """
        report: Any = self._publisher.publish(channel, data)
        if isinstance(report, Deferred):
            report.addErrback(self._not_published, channel)
        return report  # type: ignore[no-any-return]

    def _not_published(self, failure: Failure, channel: str) -> DeliveryReport:
        self.log.warn(
            "Event on {channel} was not published: {reason}",
            channel=channel,
            reason=failure.getErrorMessage(),
        )
        return DeliveryReport(0, 1)

    def emit(self, channel: str, data: Any) -> DeliveryReport:
        """
        Publish C{data} as given on any channel.
        """
        return self._publish(channel, data)
