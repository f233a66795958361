"""
Search over HTTP: C{POST /api/search} starts a search whose progress comes
as C{search} events, C{DELETE /api/search/<id>} cancels it, and
C{POST /api/files/search} answers with all results at once.

The search source mounts these routes while it runs. Each calls the
procedure that WebSocket clients invoke, so both transports answer alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.router.procedures import NoSuchProcedure
from cluso_router.router.router import Router
from cluso_router.sources.context import SourceContext
from cluso_router.web.resources import ApiError, JsonEndpoint, NotFound
from cluso_router.web.routes import (
    STRING,
    Operation,
    OperationEndpoint,
    Param,
    Schema,
    describe,
    error_responses,
    json_response,
    operation_object,
)

TAGS: Final = ("search",)
BOOLEAN: Final[Schema] = {"type": "boolean"}
GLOBS: Final[Schema] = {"oneOf": [STRING, {"type": "array", "items": STRING}]}
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}

SEARCH_RESULT: Final[Schema] = {
    "type": "object",
    "required": ["file", "line", "column", "match", "context"],
    "properties": {
        "file": {**STRING, "description": "Relative to the root, / separated"},
        "line": {"type": "integer", "description": "1-based"},
        "column": {"type": "integer", "description": "1-based, in characters"},
        "match": STRING,
        "context": {**STRING, "description": "The line, with contextLines around it"},
    },
}
SCHEMAS: Final[dict[str, Schema]] = {"SearchResult": SEARCH_RESULT}
RESULTS: Final[Schema] = {"type": "array", "items": {"$ref": "#/components/schemas/SearchResult"}}


def call(router: Router, procedure: str, source: str, data: Any) -> Deferred[Any]:
    """
    Call C{procedure}; when nothing provides it, say which event source
    would (it is not running on this server).
    """

    def unavailable(failure: Failure) -> Failure:
        if failure.check(NoSuchProcedure):
            raise ApiError(f"{procedure} is not available: the {source} source is not running", 503)
        return failure

    return router.call(procedure, data).addErrback(unavailable)


def forwarding(
    router: Router, procedure: str, source: str, params: Sequence[Param]
) -> Callable[..., Deferred[Any]]:
    """
    An L{Operation} callable that hands its arguments, under their JSON
    names again, to C{procedure}.
    """
    names = {param.keyword: param.name for param in params}
    return lambda **values: call(
        router, procedure, source, {names[k]: v for k, v in values.items()}
    )


START_PARAMS: Final = (
    Param("query", required=True, description="The text (or, with regex, pattern) to find"),
    Param("regex", BOOLEAN, description="Whether query is a regular expression; default false"),
    Param("caseSensitive", BOOLEAN, description="Default: false"),
    Param("glob", GLOBS, description=".gitignore-style globs choosing files; ! excludes"),
    Param("maxResults", {"type": "integer", "minimum": 1}, description="Default: 1000"),
    Param("path", description="Directory or file to search; default: the root"),
    Param("contextLines", COUNT, description="Lines of context around a match; default 0"),
)

FILES_SEARCH_PARAMS: Final = (
    Param("pattern", required=True, description="A regular expression (ripgrep syntax)"),
    Param("glob", GLOBS, description=".gitignore-style globs choosing files; ! excludes"),
    Param("limit", {"type": "integer", "minimum": 1}, description="Default: 1000"),
    Param("contextLines", COUNT, description="Default: 2"),
    Param("caseSensitive", BOOLEAN, description="Default: true"),
    Param("dirPath", description="Directory to search; default: the root", aliases=("path",)),
)


def start_operation(router: Router) -> Operation:
    return Operation(
        forwarding(router, "search.start", "search", START_PARAMS),
        "Start a search; progress and results follow as search events",
        params=START_PARAMS,
        data={"type": "object", "required": ["searchId"], "properties": {"searchId": STRING}},
        tags=TAGS,
        schemas=SCHEMAS,
    )


def files_search_operation(router: Router) -> Operation:
    return Operation(
        forwarding(router, "files.searchInFiles", "search", FILES_SEARCH_PARAMS),
        "Search file contents and answer with every result",
        paths=("/api/files/search",),
        params=FILES_SEARCH_PARAMS,
        data=RESULTS,
        tags=("files", *TAGS),
        schemas=SCHEMAS,
    )


class SearchResource(Resource):
    """
    C{/api/search}: C{POST} here, C{DELETE} on a search's id below it.
    """

    def __init__(self, router: Router) -> None:
        super().__init__()
        self._router = router
        self._start = OperationEndpoint({b"POST": start_operation(router)})
        describe(
            self,
            {
                "": {"post": operation_object(start_operation(router), "POST", "/api/search")},
                "/{searchId}": {"delete": _cancel_description()},
            },
        )

    def render(self, request: Request) -> bytes | int:
        return self._start.render(request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not path:
            return self._start
        if request.postpath:
            return NotFound()
        search_id = unquote(path.decode("utf-8", "replace"))
        return JsonEndpoint(
            {
                b"DELETE": lambda request: call(
                    self._router, "search.cancel", "search", {"searchId": search_id}
                )
            }
        )


def _cancel_description() -> dict[str, Any]:
    return {
        "operationId": "delete_api_search_searchId",
        "summary": "Cancel a running search; its final event says cancelled",
        "tags": list(TAGS),
        "x-procedure": "search.cancel",
        "parameters": [{"name": "searchId", "in": "path", "required": True, "schema": STRING}],
        "responses": {
            "200": json_response(
                "The envelope with {searchId, cancelled: true} in data", {"type": "object"}
            ),
            **error_responses(),
        },
    }


def mount_routes(context: SourceContext) -> None:
    """
    Serve the search routes while the search source runs.
    """
    context.mount("/api/search", SearchResource(context.router))
    context.add_operations([files_search_operation(context.router)])
