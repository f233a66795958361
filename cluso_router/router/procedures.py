"""
Named procedures that clients call with C{invoke}.

One registry serves every transport (the JSON dialect's C{invoke}, the HTTP
API, WAMP calls), so an operation is written once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred

from cluso_router.router.observers import Observers


class ProcedureError(Exception):
    """
    An expected failure of a procedure: the client sees C{message} and
    C{code} as they are, and nothing is logged as a crash.
    """

    def __init__(self, message: str, code: str = "procedure_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NoSuchProcedure(ProcedureError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No such procedure: {name}", "no_such_procedure")


class ProcedureRegistry:
    """
    Maps procedure names to callables taking the call's C{data}.

    A procedure may return a plain value, a L{Deferred} or a coroutine. One
    that can report progress before its result (a streamed answer, say)
    declares a keyword parameter C{progress} defaulting to C{None}; see
    L{call}.

    @ivar changes: told after every registration and unregistration.
    """

    def __init__(self) -> None:
        self._procedures: dict[str, Callable[[Any], Any]] = {}
        self._progressive: set[str] = set()
        self.changes = Observers()
        #: Where a name no procedure here has is called (the WAMP dealer,
        #: with the procedures WAMP callees registered); it tells
        #: L{changes} when its names change.
        self.remote: RemoteProcedures | None = None

    def register(self, name: str, procedure: Callable[[Any], Any]) -> None:
        if name in self._procedures:
            raise ValueError(f"procedure {name!r} is already registered")
        self._procedures[name] = procedure
        if takes_progress(procedure):
            self._progressive.add(name)
        self.changes.notify()

    def unregister(self, name: str) -> None:
        if self._procedures.pop(name, None) is not None:
            self._progressive.discard(name)
            self.changes.notify()

    def __contains__(self, name: object) -> bool:
        return name in self._procedures

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._procedures))

    def names(self) -> list[str]:
        """
        Every procedure callable by name: this registry's and the remote
        ones', sorted.
        """
        remote = self.remote.exact_names() if self.remote is not None else ()
        return sorted({*self._procedures, *remote})

    def takes_progress(self, name: str) -> bool:
        """
        Whether procedure C{name} reports progress when called with C{progress}.
        """
        return name in self._progressive

    def call(
        self, name: str, data: Any, progress: Callable[[Any], None] | None = None
    ) -> Deferred[Any]:
        """
        Call procedure C{name} with C{data}.

        @param progress: given by a caller that takes progressive results
            (a WAMP C{CALL} with C{receive_progress}); passed on as
            C{progress=} to a procedure that declares that parameter, which
            may call it with one JSON value any number of times before its
            result. Other procedures are called without it.
        @return: a L{Deferred} firing with the result, or failing with
            L{NoSuchProcedure}, a L{ProcedureError} or whatever it raised.
            A name no procedure here has goes to L{remote}, when set.
        """
        procedure: Callable[..., Any] | None = self._procedures.get(name)
        if procedure is None:
            if self.remote is not None:
                return self.remote.call_from_router(name, data, progress)
            return fail(NoSuchProcedure(name))
        if progress is not None and name in self._progressive:
            d = maybeDeferred(procedure, data, progress=progress)
        else:
            d = maybeDeferred(procedure, data)

        return d.addCallback(await_result)


class RemoteProcedures(Protocol):
    """
    Procedures answered outside the registry, called by name.
    """

    def call_from_router(
        self, name: str, data: Any, progress: Callable[[Any], None] | None
    ) -> Deferred[Any]:
        """
        Call C{name} with C{data}; fails with L{NoSuchProcedure} for a
        name nobody answers.
        """

    def exact_names(self) -> Iterable[str]:
        """
        The names callable exactly as they are (not patterns).
        """


def takes_progress(procedure: Callable[..., Any]) -> bool:
    """
    Whether C{procedure} declares a C{progress} keyword parameter.
    """
    try:
        parameter = inspect.signature(procedure).parameters.get("progress")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def await_result(value: Any) -> Any:
    """
    Turn a coroutine (or other awaitable) result into a L{Deferred}; leave
    any other value alone. For callbacks of functions that may be async.
    """
    if inspect.isawaitable(value):
        return ensureDeferred(value)  # type: ignore[arg-type]
    return value
