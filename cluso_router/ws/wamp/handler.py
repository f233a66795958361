"""
One WAMP connection: the session's lifecycle (HELLO, authentication,
WELCOME, GOODBYE, ABORT, and what happens when it leaves: testaments, meta
events, cleanup) and the dispatch of every other message to its
publish/subscribe and call/register parts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from autobahn.wamp import message, role
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from cluso_router.security import AccessPolicy, Refusal
from cluso_router.ws.limits import Admission, MessageRateLimiter
from cluso_router.ws.wamp.auth import Authenticator, AuthFailure, Challenge, Hello, Principal
from cluso_router.ws.wamp.codec import InvalidMessage, ProtocolViolation, decode, parse
from cluso_router.ws.wamp.pubsub import SessionPubSub
from cluso_router.ws.wamp.rpc import SessionRPC
from cluso_router.ws.wamp.serializers import WampSerializer, answering
from cluso_router.ws.wamp.session import WampSession
from cluso_router.ws.wamp.wire import Wire, wire

if TYPE_CHECKING:
    from cluso_router.ws.context import ConnectionContext

#: Close code sent with the WebSocket close that follows an ABORT.
CLOSE_NORMAL: Final = 1000
#: Close code for a client far over its message rate (as in the JSON dialect).
CLOSE_POLICY_VIOLATION: Final = 1008
GOODBYE: Final = 6


def router_roles() -> dict[str, role.RoleFeatures]:
    """
    The features WELCOME announces: exactly those this router implements.
    """
    broker = role.RoleBrokerFeatures(
        publisher_identification=True,
        pattern_based_subscription=True,
        session_meta_api=True,
        subscription_meta_api=True,
        subscriber_blackwhite_listing=True,
        publisher_exclusion=True,
        subscription_revocation=True,
        event_history=True,
        payload_transparency=True,
    )
    dealer = role.RoleDealerFeatures(
        caller_identification=True,
        pattern_based_registration=True,
        session_meta_api=True,
        registration_meta_api=True,
        shared_registration=True,
        call_timeout=True,
        call_canceling=True,
        progressive_call_results=True,
        registration_revocation=True,
        testament_meta_api=True,
        payload_transparency=True,
    )
    # Autobahn's feature classes have no parameter for the specification's
    # name of payload passthru; their marshalling sends any attribute.
    broker.payload_passthru_mode = True  # type: ignore[attr-defined]
    dealer.payload_passthru_mode = True  # type: ignore[attr-defined]
    return {"broker": broker, "dealer": dealer}


ROLES: Final = router_roles()


class State(enum.Enum):
    #: Waiting for HELLO (also after a GOODBYE: the client may join again).
    HELLO = "hello"
    #: CHALLENGE sent, waiting for AUTHENTICATE.
    CHALLENGED = "challenged"
    ESTABLISHED = "established"
    #: The router said GOODBYE (the session was killed); waiting for the
    #: client's GOODBYE, then back to HELLO.
    CLOSING = "closing"
    #: ABORT sent or the connection gone; nothing more is read.
    CLOSED = "closed"


Handler = Callable[[Any, Mapping[str, Any]], None]


class WampHandler:
    """
    The WAMP side of one connection.

    Until it joins, a connection counts against the realm's budget of
    joining connections and has the realm's C{hello_timeout} to do so;
    then it is aborted.

    @param handshake_authenticated: whether the WebSocket handshake carried
        the server token (then the session joins as a token holder).
    """

    log = Logger()

    def __init__(
        self,
        context: ConnectionContext,
        session: WampSession,
        wire: Wire,
        handshake_authenticated: bool,
        limiter: MessageRateLimiter | None = None,
    ) -> None:
        self.session = session
        self.wire = wire
        self.state = State.HELLO
        self._router = context.router
        self._realm = context.realm
        self._policy: AccessPolicy | None = context.policy
        self._authenticator = Authenticator(context.realm.config, context.policy)
        self._handshake_authenticated = handshake_authenticated
        self._limiter = limiter
        self._default_limiter = context.rate_limiter
        self._hello: tuple[message.Hello, Mapping[str, Any], Challenge, int] | None = None
        self._deadline: IDelayedCall | None = None
        self._waiting()
        self.pubsub = SessionPubSub(
            session, context.realm, context.limits.max_subscriptions, self.send
        )
        self.rpc = SessionRPC(session, context.realm, self.send, context.limits.max_subscriptions)
        pubsub, rpc = self.pubsub, self.rpc
        self._dispatch: dict[State, dict[type, Handler]] = {
            State.HELLO: {message.Hello: self._on_hello},
            State.CHALLENGED: {message.Authenticate: self._on_authenticate},
            State.ESTABLISHED: {
                message.Goodbye: self._on_goodbye,
                message.Subscribe: pubsub.subscribe,
                message.Unsubscribe: pubsub.unsubscribe,
                message.Publish: pubsub.publish,
                message.Register: rpc.register,
                message.Unregister: rpc.unregister,
                message.Call: rpc.call,
                message.Cancel: rpc.cancel,
                message.Yield: rpc.yield_,
                message.Error: self._on_error,
            },
            State.CLOSING: {message.Goodbye: self._on_goodbye_reply},
            State.CLOSED: {},
        }

    def send(self, msg: Any) -> None:
        """
        Send C{msg} (an Autobahn message, or a raw message as a list),
        serialized for this session.

        @raise ValueError: (or C{TypeError}) when a value in it has no form
            in this session's serializer; nothing is sent then.
        """
        raw = msg if isinstance(msg, list) else msg.marshal()
        self.session.deliver(self.wire.frame(raw))

    def received(self, payload: bytes, is_binary: bool) -> None:
        """
        Handle one inbound frame: one message, or several with a batched
        serializer. A frame that is not a valid WAMP message is answered
        with ERROR when it is a readable request of a joined session, else
        with ABORT; nothing a client sends raises.
        """
        if self.state is State.CLOSED:
            return
        self.session.heard = True
        serializer = self.wire.serializer
        if is_binary != serializer.binary:
            kind = "binary" if serializer.binary else "text"
            self.abort(
                "wamp.error.protocol_violation",
                f"{serializer.subprotocol} uses {kind} frames only",
            )
            return
        try:
            raws = decode(serializer, payload)
        except InvalidMessage as e:
            self._invalid(e)
            return
        answering_with = answering(serializer, payload)
        if answering_with is not serializer:
            self._rewire(answering_with)
        for raw in raws:
            if self.state is State.CLOSED:
                return
            self._handle(raw)

    def _rewire(self, serializer: WampSerializer) -> None:
        """
        Answer with C{serializer}'s variant of this session's serializer
        from now on (the peer's events too).
        """
        self.wire = wire(serializer, self.wire.transport)
        self.session.encoder = self.wire.encoder

    def _handle(self, raw: Any) -> None:
        try:
            msg, options = parse(raw)
        except InvalidMessage as e:
            self._invalid(e)
            return
        if isinstance(msg, message.Abort):
            self._close()
            return
        if self._limiter is not None and not self._admit(msg):
            return
        handle = self._dispatch[self.state].get(type(msg))
        if handle is None:
            if self.state is State.CLOSING:
                return
            self.abort(
                "wamp.error.protocol_violation",
                f"{type(msg).__name__.upper()} is not allowed in state {self.state.value}",
            )
            return
        try:
            handle(msg, options)
        except ProtocolViolation as e:
            self.abort("wamp.error.protocol_violation", str(e))
        except Exception:
            self.log.failure(
                "WAMP {kind} from {connection_id} failed",
                kind=type(msg).__name__,
                connection_id=self.session.connection_id,
            )
            self.abort("cluso.error.internal_error", "the router failed on this message")

    def _invalid(self, error: InvalidMessage) -> None:
        if error.quiet and self.state is State.ESTABLISHED:
            self.log.debug(
                "Dropped an invalid PUBLISH from {connection_id}: {reason}",
                connection_id=self.session.connection_id,
                reason=error.reason,
            )
            return
        if error.request is not None and self.state is State.ESTABLISHED:
            request_type, request = error.request
            uri = "wamp.error.invalid_uri" if error.uri_error else "wamp.error.invalid_argument"
            self.send(message.Error(request_type, request, uri, args=[error.reason]))
            return
        self.abort("wamp.error.protocol_violation", error.reason)

    def admit_control(self) -> bool:
        """
        Count a ping or pong against the message rate limit.
        """
        if self._limiter is None:
            return True
        admission = self._limiter.admit()
        if admission is Admission.ACCEPT:
            return True
        self._router.rate_limited += 1
        if admission is Admission.CLOSE:
            self.state = State.CLOSED
            self.session.close(CLOSE_POLICY_VIOLATION, "message rate limit exceeded")
        return False

    def _admit(self, msg: Any) -> bool:
        """
        Apply the message rate limit to requests; answers (YIELD, ERROR)
        and the session's lifecycle are never dropped, or calls would hang.
        """
        assert self._limiter is not None
        admission = self._limiter.admit()
        if admission is Admission.ACCEPT:
            return True
        self._router.rate_limited += 1
        if admission is Admission.CLOSE:
            self.log.info(
                "Closing {connection_id}: far over its message rate",
                connection_id=self.session.connection_id,
            )
            self._done_waiting()
            self._leave()
            self.state = State.CLOSED
            self.session.close(CLOSE_POLICY_VIOLATION, "message rate limit exceeded")
            return False
        if not isinstance(
            msg,
            message.Subscribe
            | message.Unsubscribe
            | message.Publish
            | message.Register
            | message.Unregister
            | message.Call,
        ):
            return True
        if self.state is State.ESTABLISHED and not (
            isinstance(msg, message.Publish) and not msg.acknowledge
        ):
            self.send(
                message.Error(
                    msg.MESSAGE_TYPE,
                    msg.request,
                    "cluso.error.rate_limited",
                    args=["too many messages per second; this one was dropped"],
                )
            )
        return False

    # lifecycle

    # joining

    def _waiting(self) -> None:
        """
        Start waiting for the client to join: one more joining connection,
        with a deadline.
        """
        self._realm.unjoined += 1
        self._deadline = self._router.clock.callLater(self._realm.hello_timeout, self._too_slow)

    def _done_waiting(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is None:
            return
        self._realm.unjoined -= 1
        if deadline.active():
            deadline.cancel()

    def _too_slow(self) -> None:
        self._deadline = None
        self._realm.unjoined -= 1
        self.abort("wamp.error.timeout", f"no session joined within {self._realm.hello_timeout}s")

    def _on_hello(self, msg: message.Hello, details: Mapping[str, Any]) -> None:
        if msg.realm != self._realm.name:
            self.abort(
                "wamp.error.no_such_realm",
                f"no realm {msg.realm!r}; this router serves {self._realm.name!r}",
            )
            return
        policy = self._policy
        if self._handshake_authenticated and policy is not None and policy.auth_required:
            self._welcome(msg, details, self._authenticator.token_holder(msg.authid))
            return
        wamp_id = self._realm.new_session_id()
        authextra = msg.authextra if isinstance(msg.authextra, dict) else {}
        hello = Hello(tuple(msg.authmethods or ()), msg.authid, authextra)
        try:
            answer = self._authenticator.start(hello, wamp_id)
        except AuthFailure as e:
            self._refuse(e, "hello")
            return
        if isinstance(answer, Principal):
            self._welcome(msg, details, answer, wamp_id)
            return
        self._hello = (msg, details, answer, wamp_id)
        self.state = State.CHALLENGED
        self.send(message.Challenge(answer.method, dict(answer.extra)))

    def _on_authenticate(self, msg: message.Authenticate, options: Mapping[str, Any]) -> None:
        assert self._hello is not None
        (hello, details, challenge, wamp_id), self._hello = self._hello, None
        try:
            principal = self._authenticator.finish(challenge, msg.signature)
        except AuthFailure as e:
            self._refuse(e, challenge.method)
            return
        self._welcome(hello, details, principal, wamp_id)

    def _refuse(self, failure: AuthFailure, method: str) -> None:
        """
        ABORT a session that may not join; a failed proof counts as a
        refused token (and is logged once) like a wrong token over HTTP.
        """
        if failure.uri == "wamp.error.authentication_failed":
            refusal = Refusal(401, failure.message, "token")
            if self._policy is not None:
                self._policy.refuse(refusal, f"wamp {method}")
            else:
                self._router.refusals["token"] += 1
        self.abort(failure.uri, failure.message)

    def _welcome(
        self,
        hello: message.Hello,
        details: Mapping[str, Any],
        principal: Principal,
        wamp_id: int | None = None,
    ) -> None:
        self._done_waiting()
        session = self.session
        roles = details.get("roles")
        session.roles = roles if isinstance(roles, dict) else {}
        session.authid = principal.authid
        session.authrole = principal.authrole
        session.authmethod = principal.authmethod
        session.authprovider = principal.authprovider
        session.authextra = dict(principal.authextra)
        wamp_id = self._realm.join(session, wamp_id)
        session.peer = self
        session.farewell = self.wire.frame(
            message.Goodbye("wamp.close.system_shutdown", "server stopping").marshal()
        )
        self._limiter = self._default_limiter(principal.authrole)
        self.state = State.ESTABLISHED
        self.send(
            message.Welcome(
                wamp_id,
                ROLES,
                realm=self._realm.name,
                authid=principal.authid,
                authrole=principal.authrole,
                authmethod=principal.authmethod,
                authprovider=principal.authprovider,
                authextra=dict(principal.authextra) or None,
                custom={
                    "x_cluso_cwd": self._router.cwd,
                    "x_cluso_connection_id": session.connection_id,
                },
            )
        )
        self._realm.meta_event("wamp.session.on_join", session.details(self._realm.name))

    def _on_goodbye(self, msg: message.Goodbye, details: Mapping[str, Any]) -> None:
        self._leave()
        self.state = State.HELLO
        self._waiting()
        self.send(message.Goodbye("wamp.close.goodbye_and_out"))

    def _on_goodbye_reply(self, msg: message.Goodbye, details: Mapping[str, Any]) -> None:
        self.state = State.HELLO
        self._waiting()

    def kill(self, reason: str, text: str | None) -> None:
        """
        End the session from the router's side (the session meta API's
        kill): GOODBYE with C{reason}, then the client's GOODBYE is awaited.
        """
        if self.state is not State.ESTABLISHED:
            return
        self.send([GOODBYE, {"message": text} if text else {}, reason])
        self._leave()
        self.state = State.CLOSING

    def _on_error(self, msg: message.Error, details: Mapping[str, Any]) -> None:
        if msg.request_type != message.Invocation.MESSAGE_TYPE:
            self.abort(
                "wamp.error.protocol_violation",
                "a client sends ERROR only in answer to an INVOCATION",
            )
            return
        self.rpc.error(msg, details)

    def abort(self, reason: str, text: str) -> None:
        """
        Send ABORT, leave the realm and close the connection.
        """
        self.log.debug(
            "Aborting WAMP session of {connection_id}: {reason} ({text})",
            connection_id=self.session.connection_id,
            reason=reason,
            text=text,
        )
        self.send(message.Abort(reason, text))
        self._close(reason)

    def _close(self, reason: str = "wamp.close.normal") -> None:
        self._done_waiting()
        self._leave()
        self.state = State.CLOSED
        self.session.close(CLOSE_NORMAL, reason)

    def _leave(self) -> None:
        """
        Leave the realm, once: publish the session's testaments (C{detached}
        before C{destroyed}) and C{wamp.session.on_leave}, drop its
        subscriptions and registrations, end its calls.
        """
        session = self.session
        if session.wamp_id is None:
            return
        for scope in ("detached", "destroyed"):
            for testament in session.testaments.pop(scope, ()):
                self._publish_testament(testament)
        self._realm.meta_event(
            "wamp.session.on_leave", session.wamp_id, session.authid, session.authrole
        )
        self.pubsub.leave()
        self.rpc.leave()
        self._realm.leave(session)
        session.peer = None
        session.farewell = None

    def _publish_testament(self, testament: message.Publish) -> None:
        d: Deferred[Any] = self.pubsub.publish_as(testament, {}, self.session)
        d.addErrback(
            lambda failure: self.log.warn(
                "A testament on {topic} was not published: {reason}",
                topic=testament.topic,
                reason=failure.getErrorMessage(),
            )
        )

    def closed(self) -> None:
        """
        The connection is gone: leave the realm.
        """
        self._done_waiting()
        self._leave()
        self.state = State.CLOSED


def open_wamp(
    context: ConnectionContext,
    session: WampSession,
    wire: Wire,
    handshake_authenticated: bool,
) -> WampHandler:
    """
    Register C{session}, a connection that just opened speaking WAMP on
    C{wire}, and return its handler.
    """
    session.attach()
    context.router.register_session(session)
    session.transport_details = transport_details(session, wire)
    return WampHandler(context, session, wire, handshake_authenticated, context.rate_limiter())


def transport_details(session: WampSession, wire: Wire) -> dict[str, Any]:
    """
    What the session meta API says about a session's transport.
    """
    peer = session.peer_address()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return {
        "type": wire.transport,
        "serializer": wire.serializer.id,
        "peer": f"tcp:{host}:{port}" if host is not None else None,
    }
