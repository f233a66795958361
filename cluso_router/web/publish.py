"""
C{POST /api/events/<channel>}: publish from anything that speaks HTTP, one
event per request or, with C{?batch=1}, a JSON array of events as one
burst (L{cluso_router.interfaces.IPublisher.publish_many}).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote

from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.interfaces import IPublisher
from cluso_router.router.event import InvalidEvent
from cluso_router.web.resources import ApiError, Directory, JsonEndpoint, NotFound, read_json
from cluso_router.ws.json.codec import ProtocolError, check_channel

#: Events one C{?batch=1} request may publish.
MAX_BATCH_EVENTS: Final = 1000


class PublishResource(Directory):
    """
    The channel is the rest of the path, percent-decoded, so
    C{/api/events/build%2Fdone} publishes on C{build/done}.
    """

    def __init__(self, publisher: IPublisher) -> None:
        super().__init__()
        self._publisher = publisher

    def getChild(self, path: bytes, request: Request) -> Resource:
        segments = [path, *(request.postpath or [])]
        request.postpath = []
        raw = b"/".join(segments)
        if not raw:
            return NotFound()
        channel = unquote(raw.decode("utf-8", "replace"))
        return JsonEndpoint({b"POST": lambda request: self._publish(channel, request)})

    def _publish(self, channel: str, request: Request) -> Any:
        try:
            check_channel(channel)
        except ProtocolError as e:
            raise ApiError(e.message) from None
        body = read_json(request)
        if _flag(request, b"batch"):
            return self._publish_batch(channel, body)
        published = maybeDeferred(self._publisher.publish, channel, body)
        return published.addCallbacks(
            lambda report: {
                "channel": channel,
                "delivered": report.delivered,
                "failed": report.failed,
            },
            _unavailable,
        )

    def _publish_batch(self, channel: str, body: Any) -> Any:
        if not isinstance(body, list):
            raise ApiError("with ?batch=1 the body is a JSON array of events")
        if len(body) > MAX_BATCH_EVENTS:
            raise ApiError(f"a batch holds at most {MAX_BATCH_EVENTS} events, not {len(body)}", 413)
        published = maybeDeferred(self._publisher.publish_many, channel, body)
        return published.addCallbacks(
            lambda reports: {
                "channel": channel,
                "events": len(reports),
                "delivered": sum(report.delivered for report in reports),
                "failed": sum(report.failed for report in reports),
            },
            _unavailable,
        )


def _flag(request: Request, name: bytes) -> bool:
    values = (request.args or {}).get(name) or [b""]
    return values[-1].lower() in (b"1", b"true", b"yes")


def _unavailable(failure: Failure) -> Failure:
    """
    An event that is not strict JSON is a 400; a backplane that cannot
    publish now is a 503: try again later.
    """
    if failure.check(InvalidEvent):
        raise ApiError(failure.getErrorMessage())
    first = getattr(failure.value, "subFailure", None)
    if first is not None:
        # One of a batch's publishes failed (gatherResults); say why.
        return _unavailable(first)
    if getattr(failure.value, "code", None) == "backplane_unavailable":
        raise ApiError(failure.getErrorMessage(), 503)
    return failure
