"""
A request body limit that holds before the body is read: 413 as soon as a
C{Content-Length} says too much, or as soon as a chunked body grows past
the limit, with nothing of it kept.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.python.failure import Failure
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.server import Request
from zope.interface import provider

from cluso_router._json import dumps
from cluso_router.web.resources import envelope

DEFAULT_MAX_BODY: Final = 10 * 1024 * 1024
#: Seconds the rest of a refused body is read and dropped before the
#: connection is closed, so the client reads the 413 instead of a reset.
DRAIN_SECONDS: Final = 2.0


@provider(INonQueuedRequestFactory)
class LimitedRequest(Request):
    """
    A request whose body may not exceed its site's C{max_body} bytes.

    The refusal is written straight to the transport; the request is then
    never processed, the rest of the body is dropped as it arrives, the
    write side is closed and the connection is dropped after
    L{DRAIN_SECONDS}.
    """

    _refused = False
    _received = 0
    _drain: IDelayedCall | None = None

    def _limit(self) -> int:
        """
        The site's C{max_body}, or a smaller limit its C{path_limits} set
        for paths starting with a prefix (the request line is read before
        the headers, so the path is known before any of the body).
        """
        channel: Any = self.channel
        site = channel.site
        limit: int = getattr(site, "max_body", DEFAULT_MAX_BODY)
        path = getattr(channel, "_path", b"") or b""
        for prefix, smaller in getattr(site, "path_limits", {}).items():
            if path.startswith(prefix):
                limit = min(limit, smaller)
        return limit

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        if self._drain is not None and self._drain.active():
            self._drain.cancel()
        super().connectionLost(reason)

    def _refuse(self) -> None:
        self._refused = True
        if self.content is not None:
            self.content.close()
            self.content = None
        # No "100 Continue" after the answer: the client must not send the body.
        self.requestHeaders.removeHeader(b"expect")
        body = dumps(envelope(error=f"Request body too large: the limit is {self._limit()} bytes"))
        transport: Any = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body
        )
        if ITCPTransport.providedBy(transport):
            transport.loseWriteConnection()
            self._drain = self.channel.callLater(DRAIN_SECONDS, transport.abortConnection)
        else:
            transport.loseConnection()
