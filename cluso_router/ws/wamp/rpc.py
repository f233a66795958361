"""
Calls and registrations of one WAMP session: its side as a caller (CALL,
CANCEL; RESULT and ERROR back) and as a callee (REGISTER, UNREGISTER;
INVOCATION and INTERRUPT out, YIELD and ERROR back). The realm-wide part is
the L{cluso_router.ws.wamp.dealer.Dealer}.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from autobahn.wamp import message
from twisted.logger import Logger

from cluso_router.router.subscriptions import Match
from cluso_router.ws.wamp.codec import ProtocolViolation, passthru_options
from cluso_router.ws.wamp.dealer import (
    CALL,
    CANCEL_MODES,
    ERROR,
    INVOCATION,
    MAX_PENDING_CALLS,
    RESULT,
    UNREGISTERED,
    Call,
    DealerError,
    Payload,
    Registration,
    text,
)
from cluso_router.ws.wamp.session import WampSession

if TYPE_CHECKING:
    from cluso_router.ws.wamp.realm import WampRealm

Send = Callable[[Any], None]


def payload_of(
    msg: Any, options: Mapping[str, Any], sender: WampSession | None = None, role: str = ""
) -> Payload:
    """
    The payload of a CALL, YIELD or ERROR as sent.

    @raise ProtocolViolation: for C{ppt_*} options from a C{sender} that did
        not announce payload passthru mode for its C{role}.
    """
    passthru = passthru_options(options)
    if (
        "ppt_scheme" in passthru
        and sender is not None
        and not sender.supports(role, "payload_passthru_mode")
    ):
        raise ProtocolViolation(f"payload passthru mode was not announced by this {role}")
    raw = msg.payload if isinstance(msg.payload, bytes) else None
    return Payload(list(msg.args or []), msg.kwargs or None, raw, passthru)


class _CallerReply:
    """
    Answers to one CALL of this session.
    """

    __slots__ = ("_request", "_rpc")

    def __init__(self, rpc: SessionRPC, request: int) -> None:
        self._rpc = rpc
        self._request = request

    def progress(self, answer: Payload) -> None:
        self._rpc._result(self._request, answer, progress=True)

    def result(self, answer: Payload) -> None:
        self._rpc._calls.pop(self._request, None)
        self._rpc._result(self._request, answer, progress=False)

    def error(self, uri: str, answer: Payload) -> None:
        self._rpc._calls.pop(self._request, None)
        self._rpc._send_error(CALL, self._request, uri, answer)


class SessionRPC:
    """
    Remote procedure calls for one WAMP session, as caller and as callee.

    @param max_registrations: registrations the session may hold.
    """

    log = Logger()

    def __init__(
        self, session: WampSession, realm: WampRealm, send: Send, max_registrations: int
    ) -> None:
        self.session = session
        self._realm = realm
        self._dealer = realm.dealer
        self._send = send
        self._max_registrations = max_registrations
        self._registrations: dict[int, Registration] = {}
        self._invocations: dict[int, Call] = {}
        self._invocation_ids = itertools.count(1)
        self._calls: dict[int, Call] = {}

    def _send_error(self, request_type: int, request: int, uri: str, answer: Payload) -> None:
        self._send([ERROR, request_type, request, dict(answer.options), uri, *answer.items()])

    def _error(self, msg: Any, uri: str, message_text: str) -> None:
        self._send_error(msg.MESSAGE_TYPE, msg.request, uri, text(message_text))

    # callee

    def register(self, msg: message.Register, options: Mapping[str, Any]) -> None:
        match: Match = msg.match or "exact"
        if not self._realm.authorize(self.session, msg.procedure, "register"):
            self._error(
                msg, "wamp.error.not_authorized", f"not authorized to register {msg.procedure!r}"
            )
            return
        if len(self._registrations) >= self._max_registrations:
            self._error(
                msg,
                "cluso.error.too_many_registrations",
                f"a session may hold at most {self._max_registrations} registrations",
            )
            return
        try:
            registration = self._dealer.register(
                self, msg.procedure, match, msg.invoke or "single", msg.force_reregister is True
            )
        except DealerError as e:
            self._error(msg, e.uri, e.text)
            return
        self._registrations[registration.id] = registration
        self._send(message.Registered(msg.request, registration.id))

    def unregister(self, msg: message.Unregister, options: Mapping[str, Any]) -> None:
        registration = self._registrations.pop(msg.registration, None)
        if registration is None:
            self._error(
                msg,
                "wamp.error.no_such_registration",
                f"no registration {msg.registration} on this session",
            )
            return
        self._send(message.Unregistered(msg.request))
        self._dealer.unregister(self, registration)

    def revoke(self, registration: Registration, reason: str) -> None:
        """
        The router took C{registration} from this callee; it is told when it
        announced registration revocation.
        """
        if self._registrations.pop(registration.id, None) is None:
            return
        if self.session.supports("callee", "registration_revocation"):
            self._send([UNREGISTERED, 0, {"registration": registration.id, "reason": reason}])

    def invoke(self, call: Call, registration: Registration) -> None:
        """
        Send C{call} to this callee as an INVOCATION.
        """
        request = next(self._invocation_ids)
        session = self.session
        details: dict[str, Any] = dict(call.payload.options)
        if registration.match != "exact":
            details["procedure"] = call.procedure
        if call.receive_progress:
            details["receive_progress"] = True
        if call.timeout and session.supports("callee", "call_timeout"):
            details["timeout"] = call.timeout
        caller = call.caller
        if call.disclose and caller is not None:
            details["caller"] = caller.wamp_id
            details["caller_authid"] = caller.authid
            details["caller_authrole"] = caller.authrole
        try:
            self._send([INVOCATION, request, registration.id, details, *call.payload.items()])
        except (TypeError, ValueError) as e:
            self._dealer.failed(
                call,
                "wamp.error.invalid_argument",
                text(f"the arguments cannot be sent to the callee: {e}"),
            )
            return
        call.invocation = request
        self._invocations[request] = call

    def interrupt(self, call: Call, mode: str) -> None:
        """
        Tell this callee to stop working on C{call}; after C{killnowait}
        nothing it says about it matters any more.
        """
        if self._invocations.get(call.invocation) is not call:
            return
        if mode == "killnowait":
            del self._invocations[call.invocation]
        self._send(message.Interrupt(call.invocation, mode=mode))

    def yield_(self, msg: message.Yield, options: Mapping[str, Any]) -> None:
        """
        A result (or, with C{progress}, a progressive result) of an
        invocation; one for an invocation no longer waited for is ignored.
        """
        call = self._invocations.get(msg.request)
        if call is None:
            return
        answer = payload_of(msg, options, self.session, "callee")
        if not msg.progress:
            del self._invocations[msg.request]
        self._dealer.answered(call, answer, bool(msg.progress))

    def error(self, msg: message.Error, options: Mapping[str, Any]) -> None:
        call = self._invocations.pop(msg.request, None)
        if call is not None:
            self._dealer.failed(call, msg.error, payload_of(msg, options))

    # caller

    def call(self, msg: message.Call, options: Mapping[str, Any]) -> None:
        """
        Hand a CALL to the dealer; its answers come back through a
        L{_CallerReply}.
        """
        session = self.session
        if not self._realm.authorize(session, msg.procedure, "call"):
            self._error(
                msg, "wamp.error.not_authorized", f"not authorized to call {msg.procedure!r}"
            )
            return
        if msg.request in self._calls:
            self._error(msg, "wamp.error.invalid_argument", "this request id is still pending")
            return
        if len(self._calls) >= MAX_PENDING_CALLS:
            self._error(
                msg,
                "cluso.error.too_many_calls",
                f"a session may have at most {MAX_PENDING_CALLS} calls in flight",
            )
            return
        timeout = msg.timeout or 0
        call = Call(
            msg.procedure,
            payload_of(msg, options, session, "caller"),
            _CallerReply(self, msg.request),
            caller=session,
            receive_progress=bool(msg.receive_progress),
            timeout=timeout if timeout > 0 else 0,
            disclose=options.get("disclose_me") is True
            or self._realm.discloses(session.authrole, "caller"),
        )
        self._calls[msg.request] = call
        self._dealer.call(call)

    def _result(self, request: int, answer: Payload, progress: bool) -> None:
        details: dict[str, Any] = dict(answer.options)
        if progress:
            details["progress"] = True
        try:
            self._send([RESULT, request, details, *answer.items()])
        except (TypeError, ValueError) as e:
            self.log.info("A result could not be serialized for its caller: {error}", error=e)
            self._send_error(
                CALL,
                request,
                "wamp.error.invalid_argument",
                text(f"the result cannot be serialized for this session: {e}"),
            )

    def cancel(self, msg: message.Cancel, options: Mapping[str, Any]) -> None:
        """
        Cancel a pending call; the mode (C{skip}, C{kill}, C{killnowait})
        defaults to C{killnowait}.
        """
        call = self._calls.get(msg.request)
        if call is None:
            return
        mode = msg.mode or "killnowait"
        if mode not in CANCEL_MODES:
            mode = "killnowait"
        self._dealer.cancel(call, mode)

    def leave(self) -> None:
        """
        Unregister this session's procedures, fail the invocations it did
        not answer and drop its own pending calls (interrupting their
        callees).
        """
        registrations, self._registrations = self._registrations, {}
        for registration in registrations.values():
            self._dealer.unregister(self, registration)
        invocations, self._invocations = self._invocations, {}
        for call in invocations.values():
            self._dealer.callee_lost(call)
        calls, self._calls = self._calls, {}
        for call in calls.values():
            self._dealer.caller_left(call)
