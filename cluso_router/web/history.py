"""
C{GET /api/channels/<channel>/history?since=S[&epoch=E]}: the events a
client missed, over HTTP, with the same answer as a recovering subscribe.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.interfaces import IBackplane
from cluso_router.router.history import Position, Recovery
from cluso_router.web.resources import ApiError, Directory, JsonEndpoint, NotFound
from cluso_router.ws.json.codec import ProtocolError, check_channel, event_envelope


class ChannelsResource(Directory):
    """
    Answers from C{backplane}: the router's own history, or Redis's.
    """

    def __init__(self, backplane: IBackplane) -> None:
        super().__init__()
        self._backplane = backplane

    def getChild(self, path: bytes, request: Request) -> Resource:
        rest = request.postpath or []
        if len(rest) != 1 or rest[0] != b"history":
            return NotFound()
        request.postpath = []
        channel = unquote(path.decode("utf-8", "replace"))
        return JsonEndpoint({b"GET": lambda request: self._history(channel, request)})

    def _history(self, channel: str, request: Request) -> Deferred[dict[str, Any]]:
        try:
            check_channel(channel)
        except ProtocolError as e:
            raise ApiError(e.message) from None
        args = request.args or {}
        epoch = _argument(args, b"epoch")
        raw_since = _argument(args, b"since") or "0"
        try:
            since = int(raw_since)
        except ValueError:
            raise ApiError(f"since must be a non-negative integer, not {raw_since!r}") from None
        if since < 0:
            raise ApiError("since must be a non-negative integer")
        if epoch:
            return maybeDeferred(self._backplane.since, channel, since, epoch).addCallback(
                _answer, channel
            )

        def in_current_epoch(position: Position) -> Deferred[Recovery]:
            return maybeDeferred(self._backplane.since, channel, since, position.epoch)

        current = maybeDeferred(self._backplane.position, channel)
        return current.addCallback(in_current_epoch).addCallback(_answer, channel)


def _answer(recovery: Recovery, channel: str) -> dict[str, Any]:
    return {
        "channel": channel,
        "seq": recovery.position.seq,
        "epoch": recovery.position.epoch,
        "recovered": recovery.recovered,
        "events": [event_envelope(event) for event in recovery.events],
    }


def _argument(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    return values[0].decode("utf-8", "replace") if values else None
