"""
Search as operations: C{search.start} starts a search whose progress comes
as C{search} events (C{POST /api/search}), C{search.cancel} cancels it
(C{DELETE /api/search/<id>}), and C{files.searchInFiles} answers with all
results at once (C{POST /api/files/search}), reporting progress to callers
that take it (MCP, WAMP).

The search source installs these while it runs, so every transport calls
the same service method with the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import unquote

from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.sources.search.channel import measure_progress
from cluso_router.web.resources import JsonEndpoint, NotFound
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


def by_name(procedure: Callable[..., Any], params: Sequence[Param]) -> Callable[..., Any]:
    """
    An L{Operation} callable that hands its keyword arguments, under their
    JSON names again, to C{procedure} (which takes one C{data} object),
    with C{progress} when given.
    """
    names = {param.keyword: param.name for param in params}

    def call(progress: Callable[[Any], None] | None = None, **values: Any) -> Any:
        data = {names[k]: v for k, v in values.items()}
        return procedure(data) if progress is None else procedure(data, progress=progress)

    return call


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


CANCEL_PARAMS: Final = (Param("searchId", required=True, description="From search.start"),)


def start_operation(start: Callable[[Any], Any]) -> Operation:
    return Operation(
        by_name(start, START_PARAMS),
        "Start a search; progress and results follow as search events",
        procedure="search.start",
        procedure_call=start,
        params=START_PARAMS,
        data={"type": "object", "required": ["searchId"], "properties": {"searchId": STRING}},
        mutates=False,
        tags=TAGS,
        schemas=SCHEMAS,
    )


def cancel_operation(cancel: Callable[[Any], Any]) -> Operation:
    return Operation(
        by_name(cancel, CANCEL_PARAMS),
        "Cancel a running search; its final event says cancelled",
        procedure="search.cancel",
        procedure_call=cancel,
        params=CANCEL_PARAMS,
        data={
            "type": "object",
            "required": ["searchId", "cancelled"],
            "properties": {"searchId": STRING, "cancelled": BOOLEAN},
        },
        tags=TAGS,
    )


def files_search_operation(search_in_files: Callable[..., Any]) -> Operation:
    return Operation(
        by_name(search_in_files, FILES_SEARCH_PARAMS),
        "Search file contents and answer with every result",
        paths=("/api/files/search",),
        procedure="files.searchInFiles",
        procedure_call=search_in_files,
        params=FILES_SEARCH_PARAMS,
        data=RESULTS,
        mutates=False,
        progress=measure_progress,
        tags=("files", *TAGS),
        schemas=SCHEMAS,
    )


class SearchResource(Resource):
    """
    C{/api/search}: C{POST} here starts a search, C{DELETE} on a search's
    id below it cancels it.
    """

    def __init__(self, start: Operation, cancel: Operation) -> None:
        super().__init__()
        self._start = OperationEndpoint({b"POST": start})
        self._cancel = cancel
        describe(
            self,
            {
                "": {"post": operation_object(start, "POST", "/api/search")},
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
        return JsonEndpoint({b"DELETE": lambda request: self._cancel({"searchId": search_id})})


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
