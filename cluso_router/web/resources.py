"""
JSON endpoints with the original server's response envelope.

A handler is a plain function (or coroutine function) of the request that
returns the C{data} of a successful answer or raises L{ApiError}; this
module writes the envelope, the status and the headers, so no handler
repeats them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote
from weakref import WeakKeyDictionary

from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cluso_router._json import JSONError, dumps, loads
from cluso_router._time import iso_timestamp
from cluso_router.router.procedures import ProcedureError, await_result

Handler = Callable[[Request], Any]
log = Logger()


class ApiError(Exception):
    """
    A failure the client is told about in the envelope's C{error}, with an
    HTTP status (400 unless said otherwise).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def failure_answer(failure: Failure, what: str) -> tuple[int, str]:
    """
    The status and message a failed handler or operation answers with: an
    L{ApiError}'s or a L{ProcedureError}'s own, else a logged internal error.
    Every transport of an operation (HTTP, MCP) says the same; C{what}
    names the failed thing in the log.
    """
    error = failure.value
    if isinstance(error, ApiError):
        return error.status, error.message
    if isinstance(error, ProcedureError):
        return 400, error.message
    log.failure("{what} failed", failure, what=what)
    return 500, f"Internal error: {error}"


def envelope(data: Any = None, error: str | None = None) -> dict[str, Any]:
    return {
        "success": error is None,
        "data": data,
        "error": error,
        "timestamp": iso_timestamp(),
    }


def write_envelope(request: Request, status: int, body: Mapping[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return dumps(body)


def read_json(request: Request) -> Any:
    """
    The request body as JSON, or L{ApiError} naming what is wrong with it.
    """
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        raise ApiError("Invalid request: body is empty; send a JSON value")
    try:
        return loads(raw)
    except JSONError as e:
        raise ApiError(f"Invalid request: {e}") from None


class JsonEndpoint(Resource):
    """
    A leaf answering each HTTP method it has a handler for.
    """

    isLeaf = True

    def __init__(self, handlers: Mapping[bytes, Handler]) -> None:
        super().__init__()
        self._handlers = dict(handlers)

    def render(self, request: Request) -> bytes | int:
        handler = self._handlers.get(request.method)
        if handler is None:
            allowed = b", ".join(sorted(self._handlers))
            request.setHeader(b"allow", allowed)
            return write_envelope(
                request, 405, envelope(error=f"Method not allowed; use {allowed.decode()}")
            )
        finished = [False]

        def respond(status: int, body: Mapping[str, Any]) -> None:
            if finished[0]:
                return
            request.write(write_envelope(request, status, body))
            request.finish()

        def succeeded(data: Any) -> None:
            try:
                body = envelope(data)
                dumps(body)
            except JSONError:
                log.error("Handler for {uri} returned non-JSON data", uri=request.uri)
                respond(500, envelope(error="Internal error: result is not JSON"))
                return
            respond(200, body)

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, CancelledError) and finished[0]:
                return
            status, message = failure_answer(failure, f"Handler for {request.uri!r}")
            respond(status, envelope(error=message))

        def gone(_: object) -> None:
            # The client went away (or the answer was sent): stop the work.
            finished[0] = True
            d.cancel()

        d = maybeDeferred(handler, request)
        d.addCallback(await_result)
        d.addCallbacks(succeeded, failed)
        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET


class NotFound(Resource):
    """
    404 with the JSON envelope, for any path below it.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return write_envelope(request, 404, envelope(error=f"Not found: {path}"))


_path_values: WeakKeyDictionary[Request, dict[str, str]] = WeakKeyDictionary()


def path_values(request: Request) -> dict[str, str]:
    """
    The values of the path parameters (C{{backupId}} in
    C{/api/backup/{backupId}}) the route tree captured for C{request}.
    """
    return _path_values.setdefault(request, {})


class Directory(Resource):
    """
    A node of the route tree: named children, then at most one variable
    child that takes any other non-empty segment as the value of its path
    parameter; JSON 404 for the rest. A named child always wins over the
    variable one, so C{/api/backup/cleanup} is not read as a backup id.

    @ivar variable: the path parameter's name and the child serving it.
    """

    variable: tuple[str, Resource] | None = None

    def __init__(self, children: Mapping[bytes, Resource] | None = None) -> None:
        super().__init__()
        for name, child in (children or {}).items():
            self.putChild(name, child)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if self.variable is not None and path:
            name, child = self.variable
            path_values(request)[name] = unquote(path.decode("utf-8", "replace"))
            return child
        return NotFound()

    def render(self, request: Request) -> bytes:
        return NotFound().render(request)
