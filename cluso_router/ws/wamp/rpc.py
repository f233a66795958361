"""
Calls and registrations of one WAMP session: its CALL of any router
procedure, and REGISTER of procedures it answers (its registrations become
router procedures, so JSON-dialect clients can invoke them too). (The
realm-wide dealer is the router's procedure registry.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from autobahn.wamp import message
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.router.payload import arguments_of, data_of
from cluso_router.router.procedures import ProcedureError
from cluso_router.router.router import Router
from cluso_router.ws.wamp.codec import error_code, error_uri
from cluso_router.ws.wamp.realm import WampRealm, WampSession

Send = Callable[[Any], None]
Args = list[Any]
Kwargs = dict[str, Any] | None
#: Receives one progressive result as WAMP arguments.
Progress = Callable[[Args, Kwargs], None]

#: Registration ids are router-wide.
_registration_ids: Final = itertools.count(1)


class CalleeError(ProcedureError):
    """
    The ERROR a WAMP callee answered an invocation with; a WAMP caller gets
    it back unchanged, a JSON-dialect caller as a message and code.
    """

    def __init__(self, uri: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None):
        text = args[0] if args and isinstance(args[0], str) else uri
        super().__init__(text, error_code(uri))
        self.uri = uri
        self.error_args = list(args or [])
        self.error_kwargs = dict(kwargs) if kwargs else None


class Registration:
    """
    A procedure a WAMP callee registered.
    """

    def __init__(self, name: str, dealer: SessionRPC) -> None:
        self.id = next(_registration_ids)
        self.name = name
        self._dealer = dealer

    def invoke(self, args: Args, kwargs: Kwargs, progress: Progress | None) -> Deferred[Any]:
        """
        Send INVOCATION to the callee; fires with the YIELD's C{(args, kwargs)}.
        """
        return self._dealer.invoke(self, args, kwargs, progress)

    def procedure(self, data: Any, *, progress: Callable[[Any], None] | None = None) -> Any:
        """
        The router procedure: C{data} and the YIELD's payload cross between
        the JSON dialect and WAMP as L{cluso_router.router.payload} says.
        """

        def forward(args: Args, kwargs: Kwargs) -> None:
            assert progress is not None
            progress(data_of(args, kwargs))

        d = self.invoke(*arguments_of(data), forward if progress is not None else None)
        return d.addCallback(lambda answer: data_of(*answer))


@dataclass
class _Invocation:
    deferred: Deferred[Any]
    progress: Progress | None


class _Call:
    """
    A CALL this session made that is not answered yet.
    """


class SessionRPC:
    """
    Remote procedure calls for one WAMP session, as caller and as callee.
    """

    log = Logger()

    def __init__(self, session: WampSession, router: Router, realm: WampRealm, send: Send) -> None:
        self._session = session
        self._router = router
        self._realm = realm
        self._send = send
        self._registrations: dict[int, Registration] = {}
        self._invocations: dict[int, _Invocation] = {}
        self._invocation_ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}

    def _error(
        self, request_type: int, request: int, uri: str, args: Args, kwargs: Kwargs = None
    ) -> None:
        self._send(message.Error(request_type, request, uri, args=args, kwargs=kwargs))

    # callee

    def register(self, msg: message.Register) -> None:
        name = msg.procedure
        if msg.match not in (None, "exact") or msg.invoke not in (None, "single"):
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.invalid_argument",
                ["only exact, single registrations are supported"],
            )
            return
        if name.startswith("wamp."):
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.invalid_uri",
                ["procedures under wamp. are reserved"],
            )
            return
        if name in self._router.procedures:
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.procedure_already_exists",
                [f"procedure {name!r} is already registered"],
            )
            return
        registration = Registration(name, self)
        self._router.register(name, registration.procedure)
        self._realm.callees[name] = registration
        self._registrations[registration.id] = registration
        self._send(message.Registered(msg.request, registration.id))

    def unregister(self, msg: message.Unregister) -> None:
        registration = self._registrations.pop(msg.registration, None)
        if registration is None:
            self._error(
                msg.MESSAGE_TYPE,
                msg.request,
                "wamp.error.no_such_registration",
                [f"no registration {msg.registration} on this session"],
            )
            return
        self._drop(registration)
        self._send(message.Unregistered(msg.request))

    def _drop(self, registration: Registration) -> None:
        self._router.procedures.unregister(registration.name)
        if self._realm.callees.get(registration.name) is registration:
            del self._realm.callees[registration.name]

    def invoke(
        self, registration: Registration, args: Args, kwargs: Kwargs, progress: Progress | None
    ) -> Deferred[Any]:
        request = next(self._invocation_ids)
        invocation = message.Invocation(
            request,
            registration.id,
            args=args,
            kwargs=kwargs,
            receive_progress=True if progress is not None else None,
        )
        d: Deferred[Any] = Deferred()
        self._send(invocation)
        self._invocations[request] = _Invocation(d, progress)
        return d

    def yield_(self, msg: message.Yield) -> None:
        """
        A result (or, with C{progress}, a progressive result) of an
        invocation; one for an invocation no longer waited for is ignored.
        """
        invocation = self._invocations.get(msg.request)
        if invocation is None:
            return
        args, kwargs = list(msg.args or []), msg.kwargs or None
        if not msg.progress:
            del self._invocations[msg.request]
            invocation.deferred.callback((args, kwargs))
        elif invocation.progress is not None:
            invocation.progress(args, kwargs)

    def error(self, msg: message.Error) -> None:
        invocation = self._invocations.pop(msg.request, None)
        if invocation is not None:
            invocation.deferred.errback(CalleeError(msg.error, msg.args, msg.kwargs))

    # caller

    def call(self, msg: message.Call) -> None:
        """
        Call a procedure registered by another WAMP client (its arguments
        passed through unchanged) or any other router procedure (called
        with the payload's JSON value, L{data_of}, and answering with
        L{arguments_of} its result).
        """
        request = msg.request
        if msg.payload is not None:
            self._error(
                msg.MESSAGE_TYPE,
                request,
                "wamp.error.invalid_argument",
                ["transparent payloads are not supported"],
            )
            return
        call = _Call()
        self._calls[request] = call
        progress: Progress | None = None
        if msg.receive_progress:

            def progress(args: Args, kwargs: Kwargs) -> None:
                if self._calls.get(request) is call:
                    self._send(message.Result(request, args=args, kwargs=kwargs, progress=True))

        callee = self._realm.callees.get(msg.procedure)
        if callee is not None:
            d = callee.invoke(list(msg.args or []), msg.kwargs or None, progress)
        else:
            d = self._router.call(
                msg.procedure,
                data_of(msg.args, msg.kwargs),
                None if progress is None else _one_value(progress),
            ).addCallback(arguments_of)
        d.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(request, call),
            errbackArgs=(request, call, msg.procedure),
        )

    def _settle(self, request: int, call: _Call) -> bool:
        """
        Whether C{call} still waits for its answer (it was not canceled nor
        its session left); it no longer does after this.
        """
        if self._calls.get(request) is not call:
            return False
        del self._calls[request]
        return True

    def _answered(self, answer: tuple[Args, Kwargs], request: int, call: _Call) -> None:
        if not self._settle(request, call):
            return
        args, kwargs = answer
        try:
            self._send(message.Result(request, args=args, kwargs=kwargs))
        except (TypeError, ValueError) as e:
            self.log.error("A procedure returned a value that is not JSON: {error}", error=e)
            self._error(
                message.Call.MESSAGE_TYPE,
                request,
                "cluso.error.internal_error",
                ["result is not JSON"],
            )

    def _failed(self, failure: Failure, request: int, call: _Call, procedure: str) -> None:
        if not self._settle(request, call):
            return
        error = failure.value
        call_type = message.Call.MESSAGE_TYPE
        if isinstance(error, CalleeError):
            self._error(call_type, request, error.uri, error.error_args, error.error_kwargs)
        elif isinstance(error, ProcedureError):
            self._error(call_type, request, error_uri(error.code), [error.message])
        else:
            self.log.failure(
                "Procedure {procedure} failed for {connection_id}",
                failure,
                procedure=procedure,
                connection_id=self._session.connection_id,
            )
            self._error(
                call_type, request, "cluso.error.internal_error", [str(error) or repr(error)]
            )

    def cancel(self, msg: message.Cancel) -> None:
        """
        Answer a pending call with C{wamp.error.canceled} at once and drop
        its result when it comes (every mode is treated as C{skip}).
        """
        if self._calls.pop(msg.request, None) is not None:
            self._error(message.Call.MESSAGE_TYPE, msg.request, "wamp.error.canceled", ["canceled"])

    def leave(self) -> None:
        """
        Unregister this session's procedures, fail the invocations it did
        not answer and forget its own pending calls.
        """
        for registration in self._registrations.values():
            self._drop(registration)
        self._registrations.clear()
        invocations, self._invocations = self._invocations, {}
        for invocation in invocations.values():
            invocation.deferred.errback(
                CalleeError("cluso.error.callee_lost", ["the callee went away"], None)
            )
        self._calls.clear()


def _one_value(progress: Progress) -> Callable[[Any], None]:
    """
    A router-level progress callable (one value) feeding C{progress}.
    """
    return lambda value: progress(*arguments_of(value))
