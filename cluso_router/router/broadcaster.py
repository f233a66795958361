"""
Publishing for event sources: the payload as given, or stamped with its
ISO timestamp as the original server's payloads are; and bursts, where
what a source emits in one go is handed to the publisher as one batch
(L{Broadcaster.burst}).

Typed helpers for each built-in channel live with the part that owns the
channel (C{cluso_router.workspace.ledger.file_changed},
C{cluso_router.sources.lsp.events.diagnostics_updated}, ...); a third-party
source writes its own the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from itertools import groupby
from typing import Any, Final

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._time import iso_timestamp
from cluso_router.interfaces import IPublisher
from cluso_router.router.event import DeliveryReport, InvalidEvent

#: Opens a scope whose events are published as one burst
#: (L{Broadcaster.burst}, or C{contextlib.nullcontext} for none).
Burst = Callable[[], AbstractContextManager[object]]

#: Events a burst holds before it hands them on anyway.
MAX_BURST_EVENTS: Final = 1000


class Broadcaster:
    """
    Publishes events through any L{IPublisher} (the router, or a backplane
    in front of it) and never raises for a publish that fails later.
    """

    log = Logger()

    def __init__(self, publisher: IPublisher, wallclock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._wallclock = wallclock
        self._depth = 0
        self._held: list[tuple[str, Any, Deferred[DeliveryReport]]] = []

    @contextmanager
    def burst(self) -> Iterator[None]:
        """
        Hold what is emitted inside and publish it on leaving, each run of
        events on one channel with the publisher's C{publish_many}: every
        subscriber then gets the burst in one write. Emits inside answer
        with a Deferred of their report.
        """
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                self._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        for channel, run in groupby(held, key=lambda item: item[0]):
            events = list(run)
            published = maybeDeferred(
                self._publisher.publish_many, channel, [data for _, data, _ in events]
            )
            published.addCallbacks(
                lambda reports, events=events: _fire(events, reports),
                lambda failure, events=events: self._one_by_one(failure, events),
            )

    def _one_by_one(
        self, failure: Failure, events: list[tuple[str, Any, Deferred[DeliveryReport]]]
    ) -> None:
        """
        A batch with an invalid event publishes nothing; publish its events
        one by one, so only the invalid one fails.
        """
        if not failure.check(InvalidEvent):
            report = self._not_published(failure, events[0][0])
            for _, _, answer in events:
                answer.callback(DeliveryReport(0, report.failed))
            return
        for channel, data, answer in events:
            published = maybeDeferred(self._publish_now, channel, data)
            published.addErrback(self._not_published, channel).chainDeferred(answer)

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
        if self._depth:
            answer: Deferred[DeliveryReport] = Deferred()
            self._held.append((channel, data, answer))
            if len(self._held) >= MAX_BURST_EVENTS:
                self._release()
            return answer  # type: ignore[return-value]
        return self._publish_now(channel, data)

    def _publish_now(self, channel: str, data: Any) -> DeliveryReport:
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


def _fire(
    events: list[tuple[str, Any, Deferred[DeliveryReport]]], reports: list[DeliveryReport]
) -> None:
    for (_, _, answer), report in zip(events, reports, strict=True):
        answer.callback(report)
