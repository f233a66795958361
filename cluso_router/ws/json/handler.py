"""
The Cluso-compatible JSON dialect of one connection: subscribe (with
patterns and recovery), unsubscribe, invoke, send, and the answers to each.

Everything it sends (acks, call results, errors) goes through the
connection's session, so replies and events leave in the order they were
produced.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._json import JSONError, loads
from cluso_router.interfaces import IBackplane
from cluso_router.router.event import InvalidEvent
from cluso_router.router.history import Position, Recovery
from cluso_router.router.procedures import ProcedureError
from cluso_router.ws.context import ConnectionContext
from cluso_router.ws.json import codec as messages
from cluso_router.ws.json.codec import Invoke, ProtocolError, Send, Subscribe, Unsubscribe
from cluso_router.ws.limits import Admission, MessageRateLimiter
from cluso_router.ws.session import Session

#: Close code for a client that keeps sending far above its message rate.
CLOSE_POLICY_VIOLATION: Final = 1008


class JsonHandler:
    """
    The JSON dialect's side of one connection, from its greeting to its
    close.
    """

    log = Logger()

    def __init__(self, context: ConnectionContext, session: Session) -> None:
        self._context = context
        self._session = session
        self._limiter: MessageRateLimiter | None = context.rate_limiter(context.token_role)
        self._closed = False

    @property
    def session(self) -> Session:
        return self._session

    def opened(self) -> None:
        """
        Register the session with the router and greet the client.
        """
        router = self._context.router
        router.register_session(self._session)
        self._session.send_message(messages.greeting(self._session.connection_id, router.cwd))

    def closed(self) -> None:
        self._closed = True

    def admit_control(self) -> bool:
        if self._limiter is None:
            return True
        admission = self._limiter.admit()
        if admission is Admission.ACCEPT:
            return True
        self._context.router.rate_limited += 1
        if admission is Admission.CLOSE:
            self._close_for_rate()
        return False

    def _close_for_rate(self) -> None:
        self.log.info(
            "Closing {connection_id}: far over its message rate",
            connection_id=self._session.connection_id,
        )
        self._session.close(CLOSE_POLICY_VIOLATION, "message rate limit exceeded")

    def received(self, payload: bytes, is_binary: bool) -> None:
        """
        Handle one inbound message; nothing a client sends raises.
        """
        session = self._session
        session.heard = True
        if self._limiter is not None:
            admission = self._limiter.admit()
            if admission is not Admission.ACCEPT:
                self._rate_limited(session, payload, admission)
                return
        try:
            if is_binary:
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
            self.log.debug(
                "Refused message from {connection_id}: {code}",
                connection_id=session.connection_id,
                code=e.code,
            )
            session.send_message(messages.error(e.code, e.message, e.request_id))
        except Exception as e:
            # A bug behind one message must not cost the client its
            # connection: log it, answer it, keep going.
            self.log.failure(
                "Handling a message from {connection_id} failed",
                connection_id=session.connection_id,
            )
            session.send_message(messages.error("internal_error", str(e) or repr(e)))

    def _rate_limited(self, session: Session, payload: bytes, admission: Admission) -> None:
        self._context.router.rate_limited += 1
        if admission is Admission.CLOSE:
            self._close_for_rate()
            return
        try:
            message = loads(payload)
        except JSONError:
            message = None
        request_id = (
            message.get("id", messages.NO_ID) if isinstance(message, dict) else messages.NO_ID
        )
        session.send_message(
            messages.error(
                "rate_limited",
                f"more than {self._context.limits.message_rate:g} messages per second; "
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
        router = self._context.router
        limit = self._context.limits.max_subscriptions
        self._authorize(request.channel, "subscribe", request.request_id)
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
        backplane = self._context.publisher
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
                try:
                    frame = session.encoder.encode_event(event, None)
                except Exception:
                    # Recorded events were checked when published; one that
                    # still fails must not cost the client the rest.
                    self.log.failure(
                        "Replaying event {seq} of {channel} failed",
                        seq=event.seq,
                        channel=event.channel,
                    )
                    continue
                session.deliver(frame)

    def _subscribe_through(self, backplane: Any, session: Session, request: Subscribe) -> None:
        """
        The same answer as a local subscribe, from a backplane that answers
        later: live events for the new subscriber are held back until the
        position (and replay) is sent, then those newer than it follow.
        """
        router = self._context.router
        channel = request.channel
        router.hold(session, channel)
        answer: Deferred[Any] = (
            backplane.position(channel)
            if request.since is None
            else backplane.since(channel, request.since.seq, request.since.epoch)
        )

        def answered(result: Position | Recovery) -> None:
            if self._closed:
                return
            self._acknowledge(session, request, result)
            position = result if isinstance(result, Position) else result.position
            router.release(session, channel, position.seq)

        def failed(failure: Failure) -> None:
            self.log.failure(
                "Subscribing {channel} through the backplane failed", failure, channel=channel
            )
            router.release(session, channel, 0)
            if not self._closed:
                session.send_message(
                    messages.error("internal_error", "subscribe failed", request.request_id)
                )

        answer.addCallbacks(answered, failed)

    def _handle_unsubscribe(self, session: Session, request: Unsubscribe) -> None:
        self._context.router.unsubscribe(session, request.channel, request.match)
        details = {"match": request.match} if request.match != "exact" else {}
        session.send_message(
            messages.ack("unsubscribed", request.channel, request.request_id, **details)
        )

    def _authorize(self, uri: str, action: str, request_id: Any) -> None:
        """
        Refuse what the role of token holders may not do (see
        L{cluso_router.ws.access}; without configured roles, anything goes).
        """
        if not self._context.allows(uri, action):
            raise ProtocolError(
                "not_authorized", f"not authorized to {action} on {uri!r}", request_id
            )

    def _handle_send(self, session: Session, request: Send) -> None:
        self._authorize(request.channel, "publish", request.request_id)
        router = self._context.router
        if router.claims.is_claimed(request.channel) or request.channel.startswith("wamp."):
            raise ProtocolError(
                "forbidden_channel",
                f"channel {request.channel!r} is published by the server only",
                request.request_id,
            )
        try:
            report = self._context.publisher.publish(request.channel, request.data)
        except InvalidEvent as e:
            raise ProtocolError(e.code, str(e), request.request_id) from None
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
            self.log.failure("Publishing on {channel} failed", failure, channel=request.channel)
            code = "internal_error"
        session.send_message(messages.error(code, failure.getErrorMessage(), request.request_id))

    def _handle_invoke(self, session: Session, request: Invoke) -> None:
        request_id = request.request_id
        self._authorize(request.procedure, "call", request_id)

        def answered(value: Any) -> None:
            try:
                reply = messages.result(request_id, value)
                session.send_message(reply)
            except (TypeError, ValueError) as e:
                self.log.error(
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
                self.log.failure(
                    "Procedure {procedure} failed for {connection_id}",
                    failure,
                    procedure=request.procedure,
                    connection_id=session.connection_id,
                )
                reply = messages.error("internal_error", str(error) or repr(error), request_id)
            session.send_message(reply)

        self._context.router.call(request.procedure, request.data).addCallbacks(answered, failed)
