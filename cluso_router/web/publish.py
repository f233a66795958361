"""
C{POST /api/events/<channel>}: publish from anything that speaks HTTP.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.interfaces import IPublisher
from cluso_router.router.event import InvalidEvent
from cluso_router.web.resources import ApiError, Directory, JsonEndpoint, NotFound, read_json
from cluso_router.ws.json.codec import ProtocolError, check_channel


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
        published = maybeDeferred(self._publisher.publish, channel, read_json(request))
        return published.addCallbacks(
            lambda report: {
                "channel": channel,
                "delivered": report.delivered,
                "failed": report.failed,
            },
            _unavailable,
        )


def _unavailable(failure: Failure) -> Failure:
    """
    An event that is not strict JSON is a 400; a backplane that cannot
    publish now is a 503: try again later.
    """
    if failure.check(InvalidEvent):
        raise ApiError(failure.getErrorMessage())
    if getattr(failure.value, "code", None) == "backplane_unavailable":
        raise ApiError(failure.getErrorMessage(), 503)
    return failure
