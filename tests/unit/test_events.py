"""
The broadcaster's payloads, and what it does when a backplane refuses an
event.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import fail
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface import implementer

from cluso_router.interfaces import IPublisher
from cluso_router.router.event import DeliveryReport
from cluso_router.service import EventBroadcaster
from cluso_router.testing import RecordingPublisher


def test_payloads_are_stamped_and_sent_on_their_channels() -> None:
    """
    Each typed method publishes its payload, with an ISO timestamp, on its
    server-owned channel; C{emit} sends data as given.
    """
    publisher = RecordingPublisher()
    broadcaster = EventBroadcaster(publisher, wallclock=lambda: 1733758245.123)
    broadcaster.file_changed("src/a.py", "change")
    broadcaster.git_event("commit", "main: abc1234 fix")
    broadcaster.emit("custom", [1, 2])
    assert publisher.published == [
        ("files", {"file": "src/a.py", "event": "change", "timestamp": "2024-12-09T15:30:45.123Z"}),
        (
            "git",
            {
                "type": "commit",
                "message": "main: abc1234 fix",
                "timestamp": "2024-12-09T15:30:45.123Z",
            },
        ),
        ("custom", [1, 2]),
    ]


def test_unknown_kinds_are_refused() -> None:
    """
    File event names, git types, severities and validation types outside
    the protocol's sets are refused before anything is published.
    """
    publisher = RecordingPublisher()
    broadcaster = EventBroadcaster(publisher)
    with pytest.raises(ValueError, match="file event"):
        broadcaster.file_changed("a", "modified")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="git event"):
        broadcaster.git_event("merge", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="severity"):
        broadcaster.diagnostics_updated([{"severity": "fatal"}])
    with pytest.raises(ValueError, match="validation type"):
        broadcaster.validation_complete({"type": "test"})
    assert publisher.published == []


@implementer(IPublisher)
class DownBackplane:
    def publish(self, channel: str, data: Any) -> Any:
        return fail(ConnectionError("Redis cannot be reached"))


def test_refused_publish_is_logged_and_reported_not_raised() -> None:
    """
    When the backplane fails a publish, the broadcaster logs a warning
    naming the channel and the reason, and its Deferred fires with one
    failed delivery instead of an unhandled error.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        results: list[object] = []
        EventBroadcaster(DownBackplane()).file_changed("a.py", "add").addCallback(  # type: ignore[attr-defined]
            results.append
        )
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert results == [DeliveryReport(0, 1)]
    (warning,) = [e for e in events if e.get("log_level") == LogLevel.warn]
    assert warning["channel"] == "files"
    assert "Redis cannot be reached" in warning["reason"]
