"""
The realm's dealer: registrations (exact, prefix and wildcard; one callee
or shared by several under an invocation policy) and every call in flight,
with its timeout, cancellation and the INTERRUPT its callee gets.

A call comes from a WAMP caller, or from the router's procedure registry
when a JSON-dialect client (or the HTTP API) invokes a name no router
procedure has; it goes to the router's own procedure of that name, else to
the best matching registration (exact, then the longest prefix, then the
wildcard with the most named components). Router procedures and WAMP
registrations share one namespace: a WAMP client cannot register a name a
router procedure has.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router.router.payload import arguments_of, data_of
from cluso_router.router.procedures import NoSuchProcedure, ProcedureError
from cluso_router.router.subscriptions import Match, PrefixIndex, WildcardIndex
from cluso_router.ws.wamp.codec import error_code, error_uri

if TYPE_CHECKING:
    from cluso_router.ws.wamp.realm import WampRealm

INVOKE_POLICIES: Final = ("single", "roundrobin", "random", "first", "last")
CANCEL_MODES: Final = ("skip", "kill", "killnowait")
#: Calls one session may have in flight; more are refused.
MAX_PENDING_CALLS: Final = 1024

INVOCATION: Final = 68
INTERRUPT: Final = 69
RESULT: Final = 50
ERROR: Final = 8
CALL: Final = 48
UNREGISTERED: Final = 67

_registration_ids: Final = itertools.count(1)

Args = list[Any]
Kwargs = dict[str, Any] | None


class DealerError(Exception):
    """
    A call or registration the dealer refuses: the WAMP error URI and its
    message.
    """

    def __init__(self, uri: str, text: str) -> None:
        super().__init__(text)
        self.uri = uri
        self.text = text


class CalleeError(ProcedureError):
    """
    The ERROR a callee answered with; a WAMP caller gets it back unchanged,
    a JSON-dialect caller as a message and code.
    """

    def __init__(self, uri: str, args: Args | None, kwargs: Kwargs) -> None:
        text = args[0] if args and isinstance(args[0], str) else uri
        super().__init__(text, error_code(uri))
        self.uri = uri
        self.error_args = list(args or [])
        self.error_kwargs = dict(kwargs) if kwargs else None


@dataclass(frozen=True)
class Payload:
    """
    What a call, an answer or an error carries: arguments, or a transparent
    payload (Autobahn's C{enc_*} form) in their place, and the payload
    passthru options (C{ppt_*} or C{enc_*}) that go with it.
    """

    args: Args = field(default_factory=list)
    kwargs: Kwargs = None
    raw: bytes | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def items(self) -> list[Any]:
        """
        The message elements after the details: C{[raw]}, C{[args]} or
        C{[args, kwargs]}.
        """
        if self.raw is not None:
            return [self.raw]
        return [self.args, self.kwargs] if self.kwargs else [self.args]

    @property
    def transparent(self) -> bool:
        return self.raw is not None or bool(self.options)


def text(message: str) -> Payload:
    """
    The payload of an error the router makes: its message.
    """
    return Payload([message])


class Identity(Protocol):
    """
    Who a caller or callee is, and what its client announced; a session of
    this node or of another one.
    """

    @property
    def wamp_id(self) -> int | None: ...

    @property
    def authid(self) -> str | None: ...

    @property
    def authrole(self) -> str | None: ...

    def supports(self, role: str, feature: str) -> bool: ...


class Callee(Protocol):
    """
    A registered endpoint: one session's callee side, here or on another
    node.
    """

    @property
    def session(self) -> Identity: ...

    def invoke(self, call: Call, registration: Registration) -> None: ...

    def interrupt(self, call: Call, mode: str) -> None: ...

    def revoke(self, registration: Registration, reason: str) -> None: ...


class RegistrationObserver(Protocol):
    def registered(self, callee: Callee, registration: Registration) -> None: ...

    def unregistered(self, callee: Callee, registration: Registration) -> None: ...


class Reply(Protocol):
    """
    Where a call's answers go: a WAMP caller, or a router-side Deferred.
    """

    def progress(self, answer: Payload) -> None: ...

    def result(self, answer: Payload) -> None: ...

    def error(self, uri: str, answer: Payload) -> None: ...


class Registration:
    """
    A procedure (or pattern) registered by one or more callees, who are
    invoked in registration order under its invocation policy.
    """

    __slots__ = ("_next", "callees", "created", "id", "invoke", "match", "pattern")

    def __init__(self, pattern: str, match: Match, invoke: str, created: str) -> None:
        self.id = next(_registration_ids)
        self.pattern = pattern
        self.match = match
        self.invoke = invoke
        self.created = created
        self.callees: list[Callee] = []
        self._next = 0

    def choose(self, rng: random.Random) -> Callee:
        """
        The callee to invoke next, by the invocation policy.
        """
        callees = self.callees
        if self.invoke == "roundrobin":
            callee = callees[self._next % len(callees)]
            self._next = (self._next + 1) % len(callees)
            return callee
        if self.invoke == "random":
            return rng.choice(callees)
        if self.invoke == "last":
            return callees[-1]
        return callees[0]

    def details(self) -> dict[str, Any]:
        """
        What the registration meta API says about it.
        """
        return {
            "id": self.id,
            "created": self.created,
            "uri": self.pattern,
            "match": self.match,
            "invoke": self.invoke,
        }


@dataclass(eq=False)
class Call:
    """
    One call in flight.

    @ivar caller: the WAMP session that made it, or C{None} for a call from
        the router (a JSON-dialect client, the HTTP API).
    @ivar timeout: milliseconds the dealer waits for an answer (0: for ever).
    @ivar disclose: whether the callee learns who the caller is.
    """

    procedure: str
    payload: Payload
    reply: Reply
    caller: Identity | None = None
    receive_progress: bool = False
    timeout: int = 0
    disclose: bool = False
    #: Where it went: the callee and its invocation id, or the Deferred of a
    #: router procedure.
    callee: Callee | None = None
    invocation: int = 0
    #: The key of its call to another node's callee.
    remote: str | None = None
    running: Deferred[Any] | None = None
    timer: IDelayedCall | None = None
    #: Set once canceled with C{kill}: the caller waits for the callee's
    #: answer (and gets no more progress).
    killed: bool = False
    done: bool = False

    def finish(self) -> bool:
        """
        Mark the call answered; C{False} when it already was.
        """
        if self.done:
            return False
        self.done = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        return True


class _ExactRegistrations:
    def __init__(self) -> None:
        self._by_uri: dict[str, Registration] = {}

    def get(self, pattern: str) -> Registration | None:
        return self._by_uri.get(pattern)

    def add(self, registration: Registration) -> None:
        self._by_uri[registration.pattern] = registration

    def remove(self, registration: Registration) -> None:
        del self._by_uri[registration.pattern]

    def matching(self, uri: str) -> Iterator[Registration]:
        found = self._by_uri.get(uri)
        if found is not None:
            yield found

    def __iter__(self) -> Iterator[Registration]:
        return iter(self._by_uri.values())


class Dealer:
    """
    Registrations and calls of one realm.
    """

    log = Logger()

    def __init__(self, realm: WampRealm, rng: random.Random | None = None) -> None:
        self._realm = realm
        self._rng = rng if rng is not None else random.Random()
        self._indexes: dict[str, Any] = {
            "exact": _ExactRegistrations(),
            "prefix": PrefixIndex(),
            "wildcard": WildcardIndex(),
        }
        self.registrations: dict[int, Registration] = {}
        #: Procedures answered by the realm itself (the meta API), by name.
        self.meta: dict[str, Callable[[Call], Any]] = {}
        #: Told of this node's callees registering and unregistering (the
        #: cluster, which tells the other nodes).
        self.observer: RegistrationObserver | None = None

    # registrations

    def lookup(self, pattern: str, match: Match = "exact") -> Registration | None:
        registration: Registration | None = self._indexes[match].get(pattern)
        return registration

    def best(self, procedure: str) -> Registration | None:
        """
        The registration a call of C{procedure} goes to: an exact one, else
        the longest prefix, else the wildcard naming most components.
        """
        exact: Registration | None = self._indexes["exact"].get(procedure)
        if exact is not None:
            return exact
        prefixes: list[Registration] = list(self._indexes["prefix"].matching(procedure))
        if prefixes:
            return max(prefixes, key=lambda r: len(r.pattern))
        wildcards: list[Registration] = list(self._indexes["wildcard"].matching(procedure))
        if wildcards:
            return max(wildcards, key=lambda r: (_named_components(r.pattern), -r.id))
        return None

    def exact_names(self) -> list[str]:
        """
        The procedures registered by exact name, here or on other nodes
        (the router lists them, as MCP tools say).
        """
        return [registration.pattern for registration in self._indexes["exact"]]

    def by_match(self) -> dict[str, list[Registration]]:
        return {match: list(index) for match, index in self._indexes.items()}

    def register(
        self,
        callee: Callee,
        uri: str,
        match: Match,
        invoke: str,
        force: bool = False,
        remote: bool = False,
    ) -> Registration:
        """
        Add C{callee} to the registration of C{uri} under C{match},
        creating it (with the C{invoke} policy) when it is the first. For a
        C{remote} callee (another node's) no meta events are published and
        the observer is not told: its own node does both.

        @raise DealerError: for a reserved or taken name, or another policy
            than the registration's.
        """
        if uri.startswith("wamp."):
            raise DealerError("wamp.error.invalid_uri", "procedures under wamp. are reserved")
        if invoke not in INVOKE_POLICIES:
            raise DealerError(
                "wamp.error.invalid_argument",
                f"invoke must be one of {', '.join(INVOKE_POLICIES)}",
            )
        if match == "exact" and uri in self._realm.router.procedures:
            raise DealerError(
                "wamp.error.procedure_already_exists",
                f"procedure {uri!r} is a procedure of the router",
            )
        registration = self.lookup(uri, match)
        if registration is not None:
            if callee in registration.callees:
                raise DealerError(
                    "wamp.error.procedure_already_exists",
                    f"this session already registered {uri!r}",
                )
            if force and registration.invoke == "single" == invoke:
                for previous in list(registration.callees):
                    previous.revoke(registration, "wamp.error.unregistered")
                    self.unregister(previous, registration)
                registration = self.lookup(uri, match)
            elif registration.invoke == "single" or invoke == "single":
                raise DealerError(
                    "wamp.error.procedure_already_exists",
                    f"procedure {uri!r} is already registered",
                )
            elif registration.invoke != invoke:
                raise DealerError(
                    "wamp.error.procedure_exists_with_different_invocation_policy",
                    f"procedure {uri!r} is registered with invoke {registration.invoke!r}",
                )
        created = registration is None
        if registration is None:
            registration = Registration(uri, match, invoke, self._realm.now())
            self._indexes[match].add(registration)
            self.registrations[registration.id] = registration
            if match == "exact":
                self._realm.router.procedures.changes.notify()
        registration.callees.append(callee)
        if remote:
            return registration
        session_id = callee.session.wamp_id
        if created:
            self._realm.meta_event(
                "wamp.registration.on_create", session_id, registration.details()
            )
        self._realm.meta_event("wamp.registration.on_register", session_id, registration.id)
        if self.observer is not None:
            self.observer.registered(callee, registration)
        return registration

    def unregister(self, callee: Callee, registration: Registration, remote: bool = False) -> None:
        """
        Remove C{callee} from C{registration}, dropping the registration
        once nobody is left (a C{remote} callee's quietly, as in
        L{register}).
        """
        if callee not in registration.callees:
            return
        registration.callees.remove(callee)
        if not remote:
            if self.observer is not None:
                self.observer.unregistered(callee, registration)
            session_id = callee.session.wamp_id
            self._realm.meta_event("wamp.registration.on_unregister", session_id, registration.id)
        if not registration.callees:
            self._indexes[registration.match].remove(registration)
            del self.registrations[registration.id]
            if registration.match == "exact":
                self._realm.router.procedures.changes.notify()
            if not remote:
                self._realm.meta_event(
                    "wamp.registration.on_delete", callee.session.wamp_id, registration.id
                )

    # calls

    def call(self, call: Call) -> None:
        """
        Route C{call}: to the realm's own procedures (the meta API), the
        router's procedure of that name, or the best matching registration;
        its answer goes to C{call.reply}.
        """
        meta = self.meta.get(call.procedure)
        if meta is not None:
            self._call_meta(meta, call)
            return
        if call.procedure in self._realm.router.procedures:
            self._call_router(call)
            return
        registration = self.best(call.procedure)
        if registration is None:
            self._refuse(
                call, "wamp.error.no_such_procedure", NoSuchProcedure(call.procedure).message
            )
            return
        callee = registration.choose(self._rng)
        if call.payload.transparent and not _takes_passthru(callee.session, call.payload.options):
            self._refuse(
                call,
                "wamp.error.feature_not_supported",
                "the callee does not take transparent payloads",
            )
            return
        call.callee = callee
        if call.timeout > 0:
            call.timer = self._realm.router.clock.callLater(
                call.timeout / 1000, self._timed_out, call
            )
        callee.invoke(call, registration)

    def _refuse(self, call: Call, uri: str, message: str) -> None:
        call.done = True
        call.reply.error(uri, text(message))

    def _call_meta(self, meta: Callable[[Call], Any], call: Call) -> None:
        """
        A meta procedure answers (or fires a Deferred) with a L{Payload}, or
        with a value that is its one argument (C{None}: no arguments).
        """
        call.done = True

        def answered(answer: Any) -> None:
            if not isinstance(answer, Payload):
                answer = Payload([] if answer is None else [answer])
            call.reply.result(answer)

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, DealerError):
                call.reply.error(error.uri, text(error.text))
                return
            self.log.failure("Meta procedure {procedure} failed", failure, procedure=call.procedure)
            call.reply.error("cluso.error.internal_error", text(failure.getErrorMessage()))

        maybeDeferred(meta, call).addCallbacks(answered, failed)

    def _call_router(self, call: Call) -> None:
        """
        Call a router procedure with the payload's JSON value; its result
        comes back as the payload that value stands for.
        """
        if call.payload.transparent:
            self._refuse(
                call,
                "wamp.error.feature_not_supported",
                "router procedures do not take transparent payloads",
            )
            return
        progress = None
        if call.receive_progress:

            def progress(value: Any) -> None:
                if not call.done:
                    call.reply.progress(Payload(*arguments_of(value)))

        d = self._realm.router.procedures.call(
            call.procedure, data_of(call.payload.args, call.payload.kwargs), progress
        )
        call.running = d
        if call.timeout > 0 and not d.called:
            call.timer = self._realm.router.clock.callLater(
                call.timeout / 1000, self._timed_out, call
            )
        d.addCallbacks(
            self._router_answered, self._router_failed, callbackArgs=(call,), errbackArgs=(call,)
        )

    def _router_answered(self, value: Any, call: Call) -> None:
        if call.finish():
            call.reply.result(Payload(*arguments_of(value)))

    def _router_failed(self, failure: Failure, call: Call) -> None:
        if failure.check(CancelledError) or not call.finish():
            return
        error = failure.value
        if isinstance(error, CalleeError):
            call.reply.error(error.uri, Payload(error.error_args, error.error_kwargs))
        elif isinstance(error, ProcedureError):
            call.reply.error(error_uri(error.code), text(error.message))
        else:
            self.log.failure("Procedure {procedure} failed", failure, procedure=call.procedure)
            call.reply.error("cluso.error.internal_error", text(str(error) or repr(error)))

    def call_from_router(
        self, name: str, data: Any, progress: Callable[[Any], None] | None = None
    ) -> Deferred[Any]:
        """
        The router's procedure registry's fallback: a JSON-dialect client
        (or the HTTP API) invoking a procedure WAMP callees registered,
        with the value C{data} and answered with a value.
        """
        if self.best(name) is None:
            return fail(NoSuchProcedure(name))
        d: Deferred[Any] = Deferred()
        self.call(
            Call(
                name,
                Payload(*arguments_of(data)),
                _DeferredReply(d, progress),
                receive_progress=progress is not None,
            )
        )
        return d

    # answers from callees

    def answered(self, call: Call, answer: Payload, progress: bool) -> None:
        """
        A YIELD for C{call}: a progressive result when C{progress}; nothing
        once the call was answered (canceled, timed out).
        """
        if progress:
            if call.receive_progress and not call.done and not call.killed:
                call.reply.progress(answer)
        elif call.finish():
            call.reply.result(answer)

    def failed(self, call: Call, uri: str, answer: Payload) -> None:
        """
        An ERROR for C{call} from its callee; after a C{kill} cancel, the
        caller's C{wamp.error.canceled} (the callee's RESULT would still
        have come through).
        """
        if call.finish():
            if call.killed:
                call.reply.error("wamp.error.canceled", text("canceled"))
            else:
                call.reply.error(uri, answer)

    def callee_lost(self, call: Call) -> None:
        """
        C{call}'s callee went away before answering.
        """
        if call.finish():
            call.reply.error("cluso.error.callee_lost", text("the callee went away"))

    # cancellation

    def cancel(self, call: Call, mode: str) -> None:
        """
        The caller canceled C{call}: C{skip} answers it now and drops what
        the callee says; C{killnowait} also interrupts the callee; C{kill}
        interrupts it and waits for its answer. A callee that does not
        support canceling gets C{skip}.
        """
        if call.done or call.killed:
            return
        callee = call.callee
        if callee is None and call.running is not None:
            call.finish()
            call.reply.error("wamp.error.canceled", text("canceled"))
            if mode != "skip":
                call.running.cancel()
            return
        if (
            callee is None
            or mode == "skip"
            or not callee.session.supports("callee", "call_canceling")
        ):
            call.finish()
            call.reply.error("wamp.error.canceled", text("canceled"))
            return
        if mode == "kill":
            call.killed = True
            callee.interrupt(call, "kill")
            return
        call.finish()
        call.reply.error("wamp.error.canceled", text("canceled"))
        callee.interrupt(call, "killnowait")

    def _timed_out(self, call: Call) -> None:
        """
        C{call.timeout} passed: the caller gets C{wamp.error.timeout}; the
        callee an INTERRUPT (C{killnowait}) when it supports canceling.
        """
        call.timer = None
        if not call.finish():
            return
        call.reply.error("wamp.error.timeout", text("the call timed out"))
        if call.running is not None:
            call.running.cancel()
        elif call.callee is not None and call.callee.session.supports("callee", "call_canceling"):
            call.callee.interrupt(call, "killnowait")

    def caller_left(self, call: Call) -> None:
        """
        C{call}'s caller went away: its callee is interrupted
        (C{killnowait}) when it supports canceling.
        """
        if not call.finish():
            return
        if call.running is not None:
            call.running.cancel()
        elif call.callee is not None and call.callee.session.supports("callee", "call_canceling"):
            call.callee.interrupt(call, "killnowait")


def _named_components(pattern: str) -> int:
    return sum(1 for component in pattern.split(".") if component)


def _takes_passthru(session: Identity, options: Mapping[str, Any]) -> bool:
    feature = "payload_passthru_mode" if "ppt_scheme" in options else "payload_transparency"
    return session.supports("callee", feature)


class _DeferredReply:
    """
    A router-side caller: the answer fires a Deferred with a value.
    """

    def __init__(self, d: Deferred[Any], progress: Callable[[Any], None] | None) -> None:
        self._d = d
        self._progress = progress

    def progress(self, answer: Payload) -> None:
        if self._progress is not None and answer.raw is None:
            self._progress(data_of(answer.args, answer.kwargs))

    def result(self, answer: Payload) -> None:
        if answer.raw is not None:
            self._d.errback(
                ProcedureError(
                    "the callee answered with a transparent payload", "feature_not_supported"
                )
            )
            return
        self._d.callback(data_of(answer.args, answer.kwargs))

    def error(self, uri: str, answer: Payload) -> None:
        self._d.errback(CalleeError(uri, answer.args, answer.kwargs))
