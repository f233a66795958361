"""
The Cluso-compatible JSON dialect over Autobahn's WebSocket server.

Each protocol instance registers a L{Session} with the L{Router} when the
handshake completes and unregisters it when the connection goes. All it
sends (the greeting, acks, call results, errors) goes through the session,
so replies and events leave in the order they were produced.
"""

from __future__ import annotations

import json
from typing import Any, Final

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._version import __version__
from cluso_router.interfaces import IBackplane, IPublisher
from cluso_router.router.history import Position, Recovery
from cluso_router.router.procedures import ProcedureError
from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy, RequestView
from cluso_router.ws.json import codec as messages
from cluso_router.ws.json.codec import Invoke, ProtocolError, Send, Subscribe, Unsubscribe
from cluso_router.ws.limits import Admission, Limits, MessageRateLimiter
from cluso_router.ws.session import Session
from cluso_router.ws.wamp import DEFAULT_REALM, SUBPROTOCOL, WampHandler, WampRealm, open_wamp

#: Close code for a client that keeps sending far above its message rate.
CLOSE_POLICY_VIOLATION: Final = 1008
_HANDSHAKE_LEFTOVERS: Final = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_request_params",
    "http_status_line",
    "_wskey",
    "http_request_uri",
    "http_request_host",
    "http_request_path",
    "_transport_details",
    # txaio's event tables; the class-level defaults serve a protocol
    # nobody calls .on() on.
    "_results",
    "_valid_events",
)


class ClusoServerProtocol(WebSocketServerProtocol):
    """
    One client speaking the JSON dialect, or WAMP when it asked for the
    C{wamp.2.json} subprotocol (then L{WampHandler} does the talking).
    """

    # Not "log": Autobahn's own txaio logger lives there and filters levels.
    _log = Logger()
    #: Autobahn queues only chopped or synchronous sends, which this
    #: protocol never makes; an empty tuple shared by all instances stands
    #: in for each one's empty deque (760 bytes), and fails loudly if used.
    send_queue: Any = ()
    factory: ClusoWebSocketFactory
    session: Session | None = None
    _limiter: MessageRateLimiter | None = None
    _wamp: WampHandler | None = None
    _wamp_authenticated = False

    def onConnect(self, request: ConnectionRequest) -> str | None:
        """
        Apply the access policy (for a factory used outside the bundled
        site, which checks HTTP requests first) and the connection limit,
        and pick WAMP when the client offers it. A WAMP client may leave
        the token out of the handshake: it authenticates in WAMP instead.
        """
        factory = self.factory
        policy = factory.policy
        wamp = SUBPROTOCOL in request.protocols
        if policy is not None:
            local = self.transport.getHost() if self.transport is not None else None
            view = RequestView(
                method="GET",
                headers=request.headers,
                query_token=(request.params.get("token") or [None])[0],
                local_port=getattr(local, "port", 0),
                websocket=True,
            )
            refusal = policy.check(view, public=wamp)
            if refusal is not None:
                raise ConnectionDeny(refusal.status, refusal.message)
            self._wamp_authenticated = wamp and policy.authenticated(view)
        if factory.router.connection_count >= factory.limits.max_connections:
            factory.router.refusals["capacity"] += 1
            raise ConnectionDeny(503, "Service Unavailable: too many connections")
        return SUBPROTOCOL if wamp else None

    def onOpen(self) -> None:
        self._forget_handshake()
        if self.websocket_protocol_in_use == SUBPROTOCOL:
            self._wamp = open_wamp(self, self._wamp_authenticated)
            self.session = self._wamp.session
            return
        factory = self.factory
        limits = factory.limits
        session = Session(
            self,
            self.transport,
            messages.JSON_ENCODER,
            max_queue_bytes=limits.max_queue_bytes,
            counters=factory.router.queue_counters,
        )
        session.attach()
        self.session = session
        if limits.message_rate > 0:
            self._limiter = MessageRateLimiter(
                limits.message_rate, limits.message_burst, factory.router.clock
            )
        factory.router.register_session(session)
        session.send_message(messages.greeting(session.connection_id, factory.router.cwd))

    def dataReceived(self, data: bytes) -> None:
        """
        Autobahn's version formats the arguments of a debug log line
        (colours, qualified names) for every read, logged or not.
        """
        self._dataReceived(data)

    def onMessageEnd(self) -> None:
        """
        Autobahn's version also fires a C{message} event through txaio,
        a Deferred per message for listeners this protocol never has.
        """
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]

    def _forget_handshake(self) -> None:
        """
        Drop what Autobahn keeps of the opening handshake (raw request and
        response, headers); nothing reads it after the connection opened,
        and at thousands of idle connections it is a good part of their
        memory.
        """
        for name in _HANDSHAKE_LEFTOVERS:
            self.__dict__.pop(name, None)
        if not self.send_queue:
            del self.send_queue

    def onPong(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.heard = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._wamp is not None:
            self._wamp.received(payload, isBinary)
            return
        session = self.session
        if session is None:
            return
        session.heard = True
        if self._limiter is not None:
            admission = self._limiter.admit()
            if admission is not Admission.ACCEPT:
                self._rate_limited(session, payload, admission)
                return
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
        except Exception as e:
            # A bug behind one message must not cost the client its
            # connection: log it, answer it, keep going.
            self._log.failure(
                "Handling a message from {connection_id} failed",
                connection_id=session.connection_id,
            )
            session.send_message(messages.error("internal_error", str(e) or repr(e)))

    def _rate_limited(self, session: Session, payload: bytes, admission: Admission) -> None:
        router = self.factory.router
        router.rate_limited += 1
        if admission is Admission.CLOSE:
            self._log.info(
                "Closing {connection_id}: far over its message rate",
                connection_id=session.connection_id,
            )
            session.close(CLOSE_POLICY_VIOLATION, "message rate limit exceeded")
            return
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):
            message = None
        request_id = (
            message.get("id", messages.NO_ID) if isinstance(message, dict) else messages.NO_ID
        )
        session.send_message(
            messages.error(
                "rate_limited",
                f"more than {self.factory.limits.message_rate:g} messages per second; "
                "this one was dropped",
                request_id,
            )
        )

    def _handle_subscribe(self, session: Session, request: Subscribe) -> None:
        """
        Subscribe, acknowledge, then replay what the client missed when it
        asked to recover. All of it happens in one reactor turn, so no event
        published meanwhile can fall between the replay and live delivery.
        """
        router = self.factory.router
        limit = self.factory.limits.max_subscriptions
        if (
            router.subscribe(session, request.channel, request.match)
            and router.subscription_count(session) > limit
        ):
            router.unsubscribe(session, request.channel, request.match)
            raise ProtocolError(
                "too_many_subscriptions",
                f"a connection may hold at most {limit} subscriptions",
                request.request_id,
            )
        if request.match != "exact":
            session.send_message(
                messages.ack("subscribed", request.channel, request.request_id, match=request.match)
            )
            return
        backplane = self.factory.publisher
        if IBackplane.providedBy(backplane) and not backplane.synchronous:
            self._subscribe_through(backplane, session, request)
            return
        result = (
            router.position(request.channel)
            if request.since is None
            else router.since(request.channel, request.since.seq, request.since.epoch)
        )
        self._acknowledge(session, request, result)

    def _acknowledge(
        self, session: Session, request: Subscribe, result: Position | Recovery
    ) -> None:
        """
        Send the subscribe ack with the channel's position and, for a
        recovering subscribe, replay the missed events right after it.
        """
        if isinstance(result, Position):
            position, details = result, {}
        else:
            position = result.position
            details = {"recovered": result.recovered, "replayed": len(result.events)}
        session.send_message(
            messages.ack(
                "subscribed",
                request.channel,
                request.request_id,
                seq=position.seq,
                epoch=position.epoch,
                **details,
            )
        )
        if isinstance(result, Recovery):
            for event in result.events:
                session.deliver(session.encoder.encode_event(event, None))

    def _subscribe_through(self, backplane: Any, session: Session, request: Subscribe) -> None:
        """
        The same answer as a local subscribe, from a backplane that answers
        later: live events for the new subscriber are held back until the
        position (and replay) is sent, then those newer than it follow.
        """
        router = self.factory.router
        channel = request.channel
        router.hold(session, channel)
        answer: Deferred[Any] = (
            backplane.position(channel)
            if request.since is None
            else backplane.since(channel, request.since.seq, request.since.epoch)
        )

        def answered(result: Position | Recovery) -> None:
            if self.session is not session:
                return
            self._acknowledge(session, request, result)
            position = result if isinstance(result, Position) else result.position
            router.release(session, channel, position.seq)

        def failed(failure: Failure) -> None:
            self._log.failure(
                "Subscribing {channel} through the backplane failed", failure, channel=channel
            )
            router.release(session, channel, 0)
            if self.session is session:
                session.send_message(
                    messages.error("internal_error", "subscribe failed", request.request_id)
                )

        answer.addCallbacks(answered, failed)

    def _handle_unsubscribe(self, session: Session, request: Unsubscribe) -> None:
        self.factory.router.unsubscribe(session, request.channel, request.match)
        details = {"match": request.match} if request.match != "exact" else {}
        session.send_message(
            messages.ack("unsubscribed", request.channel, request.request_id, **details)
        )

    def _handle_send(self, session: Session, request: Send) -> None:
        router = self.factory.router
        if router.claims.is_claimed(request.channel):
            raise ProtocolError(
                "forbidden_channel",
                f"channel {request.channel!r} is published by the server only",
                request.request_id,
            )
        report = self.factory.publisher.publish(request.channel, request.data)
        if isinstance(report, Deferred):
            report.addCallbacks(
                lambda report: self._sent(session, request, report),
                lambda failure: self._send_failed(session, request, failure),
            )
        else:
            self._sent(session, request, report)

    def _sent(self, session: Session, request: Send, report: Any) -> None:
        if request.request_id is not messages.NO_ID:
            session.send_message(
                messages.result(
                    request.request_id,
                    {"status": "sent", "channel": request.channel, "delivered": report.delivered},
                )
            )

    def _send_failed(self, session: Session, request: Send, failure: Failure) -> None:
        """
        A publish the backplane refused is answered with an error even when
        the client asked for no reply, so it is never lost silently.
        """
        code = getattr(failure.value, "code", None)
        if not isinstance(code, str):
            self._log.failure("Publishing on {channel} failed", failure, channel=request.channel)
            code = "internal_error"
        session.send_message(messages.error(code, failure.getErrorMessage(), request.request_id))

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
        if self._wamp is not None:
            self._wamp.closed()
        if session is not None:
            if self.closedByMe and self.localCloseCode is not None:
                self.factory.router.closes[self.localCloseCode] += 1
            session.stopProducing()
            self.factory.router.unregister_session(session)


class ClusoWebSocketFactory(WebSocketServerFactory):
    """
    Builds L{ClusoServerProtocol} instances bound to one router.

    C{publisher} is where client C{send}s go: the router itself, or a
    backplane in front of it. C{policy}, when given, is checked at every
    handshake (the bundled site checks it on the HTTP request already).
    Per-message compression is not offered. A client that breaks the
    WebSocket protocol or a limit gets a close frame with the code saying
    why (1002, 1007, 1009) before the connection is dropped. WAMP clients
    join C{wamp_realm}.
    """

    protocol = ClusoServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        router: Router,
        publisher: IPublisher | None = None,
        limits: Limits | None = None,
        policy: AccessPolicy | None = None,
        wamp_realm: str = DEFAULT_REALM,
    ) -> None:
        super().__init__(server=f"cluso-router/{__version__}")
        self.router = router
        self.publisher: IPublisher = publisher if publisher is not None else router
        self.limits = limits if limits is not None else Limits()
        self.policy = policy
        self.wamp_realm = WampRealm(wamp_realm)
        self.setProtocolOptions(
            maxMessagePayloadSize=self.limits.max_message_bytes,
            maxFramePayloadSize=self.limits.max_message_bytes,
            openHandshakeTimeout=self.limits.handshake_timeout,
            closeHandshakeTimeout=1,
            autoPingInterval=0,
            failByDrop=False,
        )

    def setProtocolOptions(self, **options: Any) -> None:  # type: ignore[override]
        """
        Set options as Autobahn does, then give them to a protocol class of
        this factory's own as class attributes: Autobahn copies each option
        onto every protocol instance unless the class already has it, which
        costs a few hundred bytes per connection.
        """
        super().setProtocolOptions(**options)
        base = ClusoServerProtocol
        values = {name: getattr(self, name) for name in base.CONFIG_ATTRS}
        self.protocol = type(  # type: ignore[assignment]
            base.__name__,
            (base,),
            {
                # A function option (perMessageCompressionAccept) must not
                # become a method of the class.
                name: staticmethod(value) if callable(value) else value
                for name, value in values.items()
            },
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
