"""
The Cluso-compatible JSON dialect over Autobahn's WebSocket server.

Each protocol instance registers a L{Session} with the L{Router} when the
handshake completes and unregisters it when the connection goes. All it
sends (the greeting, acks, call results, errors) goes through the session,
so replies and events leave in the order they were produced.
"""

from __future__ import annotations

from typing import Any, Final

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import messages
from ._version import __version__
from .interfaces import IPublisher
from .messages import Invoke, ProtocolError, Send, Subscribe, Unsubscribe
from .procedures import ProcedureError
from .router import Router
from .session import DEFAULT_MAX_QUEUE_BYTES, Session

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024


class ClusoServerProtocol(WebSocketServerProtocol):
    """
    One client speaking the JSON dialect.
    """

    # Not "log": Autobahn's own txaio logger lives there and filters levels.
    _log = Logger()
    factory: ClusoWebSocketFactory
    session: Session | None = None

    def onOpen(self) -> None:
        factory = self.factory
        session = Session(
            self, self.transport, messages.JSON_ENCODER, max_queue_bytes=factory.max_queue_bytes
        )
        session.attach()
        self.session = session
        factory.router.register_session(session)
        session.send_message(messages.greeting(session.connection_id, factory.router.cwd))

    def onPong(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.heard = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        session.heard = True
        try:
            if isBinary:
                raise ProtocolError(
                    "binary_not_supported", "binary frames are not supported; send JSON text"
                )
            request = messages.parse_request(payload)
            if isinstance(request, Subscribe):
                self._handle_subscribe(session, request)
            elif isinstance(request, Unsubscribe):
                self._handle_unsubscribe(session, request)
            elif isinstance(request, Invoke):
                self._handle_invoke(session, request)
            else:
                self._handle_send(session, request)
        except ProtocolError as e:
            self._log.debug(
                "Refused message from {connection_id}: {code}",
                connection_id=session.connection_id,
                code=e.code,
            )
            session.send_message(messages.error(e.code, e.message, e.request_id))

    def _handle_subscribe(self, session: Session, request: Subscribe) -> None:
        """
        Subscribe, acknowledge, then replay what the client missed when it
        asked to recover. All of it happens in one reactor turn, so no event
        published meanwhile can fall between the replay and live delivery.
        """
        router = self.factory.router
        router.subscribe(session, request.channel, request.match)
        if request.match != "exact":
            session.send_message(
                messages.ack("subscribed", request.channel, request.request_id, match=request.match)
            )
            return
        if request.since is None:
            position = router.position(request.channel)
            session.send_message(
                messages.ack(
                    "subscribed",
                    request.channel,
                    request.request_id,
                    seq=position.seq,
                    epoch=position.epoch,
                )
            )
            return
        recovery = router.since(request.channel, request.since.seq, request.since.epoch)
        session.send_message(
            messages.ack(
                "subscribed",
                request.channel,
                request.request_id,
                seq=recovery.position.seq,
                epoch=recovery.position.epoch,
                recovered=recovery.recovered,
                replayed=len(recovery.events),
            )
        )
        for event in recovery.events:
            session.deliver(session.encoder.encode_event(event, None))

    def _handle_unsubscribe(self, session: Session, request: Unsubscribe) -> None:
        self.factory.router.unsubscribe(session, request.channel, request.match)
        details = {"match": request.match} if request.match != "exact" else {}
        session.send_message(
            messages.ack("unsubscribed", request.channel, request.request_id, **details)
        )

    def _handle_send(self, session: Session, request: Send) -> None:
        router = self.factory.router
        if request.channel in router.server_channels:
            raise ProtocolError(
                "forbidden_channel",
                f"channel {request.channel!r} is published by the server only",
                request.request_id,
            )
        report = self.factory.publisher.publish(request.channel, request.data)
        if request.request_id is not messages.NO_ID:
            session.send_message(
                messages.result(
                    request.request_id,
                    {"status": "sent", "channel": request.channel, "delivered": report.delivered},
                )
            )

    def _handle_invoke(self, session: Session, request: Invoke) -> None:
        request_id = request.request_id

        def answered(value: Any) -> None:
            try:
                reply = messages.result(request_id, value)
                session.send_message(reply)
            except (TypeError, ValueError) as e:
                self._log.error(
                    "Procedure {procedure} returned a value that is not JSON: {error}",
                    procedure=request.procedure,
                    error=e,
                )
                session.send_message(
                    messages.error("internal_error", "result is not JSON", request_id)
                )

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, ProcedureError):
                reply = messages.error(error.code, error.message, request_id)
            else:
                self._log.failure(
                    "Procedure {procedure} failed for {connection_id}",
                    failure,
                    procedure=request.procedure,
                    connection_id=session.connection_id,
                )
                reply = messages.error("internal_error", str(error) or repr(error), request_id)
            session.send_message(reply)

        self.factory.router.call(request.procedure, request.data).addCallbacks(answered, failed)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.stopProducing()
            self.factory.router.unregister_session(session)


class ClusoWebSocketFactory(WebSocketServerFactory):
    """
    Builds L{ClusoServerProtocol} instances bound to one router.

    C{publisher} is where client C{send}s go: the router itself, or a
    backplane in front of it.
    """

    protocol = ClusoServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        router: Router,
        publisher: IPublisher | None = None,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(server=f"cluso-router/{__version__}")
        self.router = router
        self.publisher: IPublisher = publisher if publisher is not None else router
        self.max_queue_bytes = max_queue_bytes
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_bytes,
            maxFramePayloadSize=max_message_bytes,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=1,
            autoPingInterval=0,
        )


def websocket_resource(
    router: Router,
    publisher: IPublisher | None = None,
    **options: Any,
) -> WebSocketResource:
    """
    A twisted.web resource that upgrades requests to the JSON dialect on
    C{router}; put it at C{/ws} of any L{twisted.web.server.Site}.
    """
    return WebSocketResource(ClusoWebSocketFactory(router, publisher, **options))
