"""
The site's HTTP/1.1 channel: twisted.web's, with two defences that must
act while a request is still arriving, before any resource sees it.

 - An absolute deadline for each request's head (request line and
   headers, which for a WebSocket is its opening handshake): twisted.web's
   own timeout is an idle timeout that every byte resets, so a client
   trickling one byte a second would hold its connection for ever.
 - A request that announces a body is checked against the access policy
   as soon as its headers are in: without credentials it is answered (401,
   or 403 for a foreign Host or Origin) and its body never read.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from cluso_router.security import AccessPolicy
from cluso_router.web.auth import head_view
from cluso_router.web.bodylimit import LimitedRequest

#: Seconds a request's head may take when the site sets no deadline.
DEFAULT_HEAD_DEADLINE: Final = 10.0

_REASONS: Final = {401: b"401 Unauthorized", 403: b"403 Forbidden"}


class ClusoChannel(HTTPChannel):
    """
    An L{HTTPChannel} reading its C{head_deadline} and C{policy} from its
    site (see L{cluso_router.web.site.build_site}).
    """

    #: Set by the site that built this channel.
    site: Any = None
    _deadline: IDelayedCall | None = None
    #: Whether the next bytes belong to a request's head (not to a body).
    _awaiting_head = True

    def dataReceived(self, data: bytes) -> None:
        # A head starts with its first byte; pipelined bytes that waited
        # while a request was handled come back through here as well.
        if self._deadline is None and self._awaiting_head and not self._handlingRequest:
            self._deadline = self.callLater(self._head_deadline(), self._head_too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._cancel_deadline()
        request = self.requests[-1]
        if self.length != 0 and isinstance(request, LimitedRequest):
            self._refuse_body_without_credentials(request)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._awaiting_head = True
        super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _refuse_body_without_credentials(self, request: LimitedRequest) -> None:
        policy: AccessPolicy | None = getattr(self.site, "policy", None)
        if policy is None:
            return
        host = self.transport.getHost() if self.transport is not None else None
        view = head_view(
            self._command, self._path, request.requestHeaders, getattr(host, "port", 0)
        )
        refusal = policy.check(view)
        if refusal is None:
            return
        headers = b""
        if refusal.status == 401:
            headers = b'WWW-Authenticate: Bearer realm="cluso"\r\n'
        request.refuse(
            _REASONS.get(refusal.status, b"%d Refused" % refusal.status),
            refusal.message,
            headers,
        )

    def _head_deadline(self) -> float:
        deadline: float = getattr(self.site, "head_deadline", DEFAULT_HEAD_DEADLINE)
        return deadline

    def _cancel_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _head_too_slow(self) -> None:
        # As for an idle connection: close, and abort if that does not finish.
        self._deadline = None
        self.timeoutConnection()
