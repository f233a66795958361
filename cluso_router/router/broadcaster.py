"""
Typed publishing for the server-owned channels, one method per kind of
event, with the payloads the original server's clients expect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._time import iso_timestamp
from cluso_router.interfaces import IPublisher
from cluso_router.router.event import DeliveryReport

FileEvent = Literal["add", "change", "unlink", "addDir", "unlinkDir"]
GitEventType = Literal["status", "commit", "push", "pull", "branch"]

FILE_EVENTS: Final = frozenset({"add", "change", "unlink", "addDir", "unlinkDir"})
GIT_EVENT_TYPES: Final = frozenset({"status", "commit", "push", "pull", "branch"})
SEVERITIES: Final = frozenset({"error", "warning", "info", "hint"})
VALIDATION_TYPES: Final = frozenset({"lint", "typecheck", "format"})


class EventBroadcaster:
    """
    Builds each payload, stamps it, and publishes it on its channel through
    any L{IPublisher} (the router, or a backplane in front of it).
    """

    log = Logger()

    def __init__(self, publisher: IPublisher, wallclock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._wallclock = wallclock

    def _stamped(self, channel: str, payload: dict[str, Any]) -> DeliveryReport:
        payload["timestamp"] = iso_timestamp(self._wallclock())
        return self._publish(channel, payload)

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

    def file_changed(self, file: str, event: FileEvent) -> DeliveryReport:
        """
        C{file} (root-relative, C{/}-separated) was added, changed or removed.
        """
        _require(event in FILE_EVENTS, f"unknown file event {event!r}")
        return self._stamped("files", {"file": file, "event": event})

    def diagnostics_updated(
        self, diagnostics: Sequence[Mapping[str, Any]], cleared: bool = False, **extra: Any
    ) -> DeliveryReport:
        """
        C{extra} carries fields such as C{file}, the file a report replaces.
        """
        for diagnostic in diagnostics:
            _require(
                diagnostic.get("severity") in SEVERITIES,
                f"unknown severity {diagnostic.get('severity')!r}",
            )
        return self._stamped(
            "diagnostics",
            {"diagnostics": [dict(d) for d in diagnostics], "cleared": cleared, **extra},
        )

    def ai_chunk(
        self, id: str, chunk: str, index: int, finished: bool, **extra: Any
    ) -> DeliveryReport:
        """
        One piece of a streamed AI answer; C{extra} carries fields such as
        C{error} on the final chunk of a failed answer.
        """
        return self._stamped(
            "ai-response",
            {"id": id, "chunk": chunk, "index": index, "finished": finished, **extra},
        )

    def search_progress(
        self,
        query: str,
        completed: int,
        total: int | None,
        results: Sequence[Mapping[str, Any]],
        **extra: Any,
    ) -> DeliveryReport:
        return self._stamped(
            "search",
            {
                "query": query,
                "completed": completed,
                "total": total,
                "results": [dict(r) for r in results],
                **extra,
            },
        )

    def validation_complete(self, validation: Mapping[str, Any]) -> DeliveryReport:
        _require(
            validation.get("type") in VALIDATION_TYPES,
            f"unknown validation type {validation.get('type')!r}",
        )
        return self._stamped("validation", {"validation": dict(validation)})

    def git_event(self, type: GitEventType, message: str) -> DeliveryReport:
        _require(type in GIT_EVENT_TYPES, f"unknown git event type {type!r}")
        return self._stamped("git", {"type": type, "message": message})

    def emit(self, channel: str, data: Any) -> DeliveryReport:
        """
        Publish C{data} as given on any channel.
        """
        return self._publish(channel, data)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
