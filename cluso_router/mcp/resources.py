"""
The resources an MCP client sees: each claimed channel as
C{cluso://channels/<channel>}, whose read is the channel's recent history,
and each workspace file as C{cluso://files/<path>}, read through the files
operations (so the workspace's confinement applies).

A read answers with at most L{MAX_READ_EVENTS} events of at most
L{MAX_READ_BYTES} bytes, the newest ones.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.python.failure import Failure

from cluso_router._json import dumps
from cluso_router.interfaces import IBackplane
from cluso_router.mcp.protocol import RESOURCE_NOT_FOUND, RpcError
from cluso_router.router.channels import ChannelRegistry, channel_problem
from cluso_router.router.event import Event
from cluso_router.router.history import Position, Recovery
from cluso_router.router.procedures import await_result
from cluso_router.web.resources import failure_answer
from cluso_router.web.routes import OperationTable
from cluso_router.ws.json.codec import event_envelope

CHANNELS: Final = "cluso://channels/"
FILES: Final = "cluso://files/"
#: The operation a file resource is read with.
READ_FILE: Final = "files.readFile"
MAX_READ_EVENTS: Final = 50
MAX_READ_BYTES: Final = 256 * 1024
JSON: Final = "application/json"

TEMPLATES: Final = (
    {
        "uriTemplate": CHANNELS + "{channel}",
        "name": "channel",
        "title": "A channel's recent events",
        "description": f"The newest events of any channel (at most {MAX_READ_EVENTS}), "
        "as the JSON dialect delivers them, with the channel's seq and epoch.",
        "mimeType": JSON,
    },
    {
        "uriTemplate": FILES + "{+path}",
        "name": "file",
        "title": "A workspace file",
        "description": "A file under the workspace root, as UTF-8 text; paths outside "
        "the root and blocked names are refused.",
    },
)


def channel_uri(channel: str) -> str:
    return CHANNELS + quote(channel, safe="")


def channel_of(uri: str) -> str | None:
    """
    The channel C{uri} names, if it names a valid one.
    """
    if not uri.startswith(CHANNELS):
        return None
    channel = unquote(uri.removeprefix(CHANNELS))
    return channel if channel_problem(channel) is None else None


class ResourceCatalog:
    """
    The resources of one server: its claimed channels, read from its
    backplane's history, and its workspace files.
    """

    def __init__(
        self, claims: ChannelRegistry, backplane: IBackplane, table: OperationTable
    ) -> None:
        self._claims = claims
        self._backplane = backplane
        self._table = table

    def resources(self) -> list[dict[str, Any]]:
        return [
            {
                "uri": channel_uri(spec.channel),
                "name": spec.channel,
                "title": f"Channel {spec.channel}",
                "description": spec.description or f"Recent events of {spec.channel}",
                "mimeType": JSON,
            }
            for spec in self._claims.specs()
        ]

    def read(self, uri: str, not_found: int = RESOURCE_NOT_FOUND) -> Deferred[list[Any]]:
        """
        The contents of C{uri}.

        @param not_found: the error code of an unknown or unreadable
            resource (it differs between revisions).
        """
        channel = channel_of(uri)
        if channel is not None:
            return self._history(uri, channel)
        if uri.startswith(FILES) and len(uri) > len(FILES):
            return self._file(uri, unquote(uri.removeprefix(FILES)), not_found)
        return fail(RpcError(not_found, f"Resource not found: {uri}", {"uri": uri}))

    def _history(self, uri: str, channel: str) -> Deferred[list[Any]]:
        def since(position: Position) -> Deferred[Recovery]:
            first = max(0, position.seq - MAX_READ_EVENTS)
            return maybeDeferred(self._backplane.since, channel, first, position.epoch)

        def contents(recovery: Recovery) -> list[Any]:
            events = newest(recovery.events)
            oldest = events[0]["seq"] if events else recovery.position.seq + 1
            body = {
                "channel": channel,
                "seq": recovery.position.seq,
                "epoch": recovery.position.epoch,
                "events": events,
                # Earlier events are not here: past the read's budget, or
                # gone from the history.
                "truncated": oldest > 1,
            }
            return [{"uri": uri, "mimeType": JSON, "text": dumps(body).decode("utf-8")}]

        position = maybeDeferred(self._backplane.position, channel)
        return position.addCallback(since).addCallback(contents)

    def _file(self, uri: str, path: str, not_found: int) -> Deferred[list[Any]]:
        operation = self._table.named(READ_FILE)
        if operation is None:
            return fail(RpcError(not_found, "Files are not served by this server", {"uri": uri}))

        def contents(read: Mapping[str, Any]) -> list[Any]:
            mime = mimetypes.guess_type(path)[0] or "text/plain"
            return [{"uri": uri, "mimeType": mime, "text": read["content"]}]

        def refused(failure: Failure) -> Failure:
            _, message = failure_answer(failure, f"Reading {uri}")
            raise RpcError(not_found, message, {"uri": uri})

        reading = maybeDeferred(operation, {"path": path}).addCallback(await_result)
        return reading.addCallbacks(contents, refused)


def newest(events: list[Event]) -> list[Any]:
    """
    The envelopes of the newest C{events} within the read budget, oldest
    first.
    """
    kept: list[Any] = []
    size = 0
    for event in reversed(events[-MAX_READ_EVENTS:]):
        envelope = event_envelope(event)
        size += len(dumps(envelope))
        if size > MAX_READ_BYTES:
            break
        kept.append(envelope)
    kept.reverse()
    return kept
