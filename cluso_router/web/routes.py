"""
Operations declared once and served on both transports, and the OpenAPI
document generated from what is mounted.

An L{Operation} names the callable of the operations layer, its arguments
(with JSON schemas), the HTTP paths and the C{invoke} procedure that reach
it. L{install_operations} mounts it into the resource tree and registers
the procedure; C{GET /api/openapi.json} walks the tree at request time, so
anything mounted later, by any module, is described too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from weakref import WeakKeyDictionary

from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router._json import dumps
from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router._version import __version__
from cluso_router.router.payload import spelled_out
from cluso_router.router.procedures import ProcedureError
from cluso_router.web.resources import (
    ApiError,
    Directory,
    JsonEndpoint,
    NotFound,
    envelope,
    read_json,
    write_envelope,
)

Schema = Mapping[str, Any]

STRING: Final[Schema] = {"type": "string"}
MESSAGE: Final[Schema] = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
}
TIMESTAMP: Final[Schema] = TIMESTAMP_SCHEMA


@dataclass(frozen=True)
class Param:
    """
    One argument: its JSON field name (the Python keyword is its snake_case
    form), schema, and other field names accepted for it.
    """

    name: str
    schema: Schema = field(default_factory=lambda: STRING)
    required: bool = False
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def keyword(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()


@dataclass(frozen=True)
class Operation:
    """
    One operation of the API.

    @ivar call: the operations layer's callable, taking keyword arguments
        and returning the C{data} (or a Deferred or coroutine of it).
    @ivar paths: HTTP paths serving it (aliases share one operation).
    @ivar procedure: the C{invoke} name, if it has one.
    @ivar read_body: C{False} for POST routes whose body the original
        ignored: it is not read, so any body is fine.
    @ivar schemas: named schemas C{data} refers to with C{$ref}.
    """

    call: Callable[..., Any]
    summary: str
    paths: tuple[str, ...] = ()
    method: str = "POST"
    procedure: str | None = None
    params: tuple[Param, ...] = ()
    data: Schema = field(default_factory=dict)
    read_body: bool = True
    tags: tuple[str, ...] = ()
    schemas: Mapping[str, Schema] = field(default_factory=dict)

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """
        Keyword arguments for C{call} from named JSON values; unknown names
        are ignored, as the original ignored unknown body fields.
        """
        kwargs = {}
        for param in self.params:
            for name in (param.name, *param.aliases):
                if name in values:
                    kwargs[param.keyword] = values[name]
                    break
        return kwargs

    def __call__(self, values: Mapping[str, Any]) -> Any:
        return self.call(**self.bind(values))

    def invoke_values(self, data: Any) -> Mapping[str, Any]:
        """
        Named values from an C{invoke}'s C{data}: absent or null is no
        arguments, an object is named arguments, an array is positional
        arguments, any other value is the first argument. A WAMP call's
        positional and keyword arguments together (spelled out as
        C{{"args": [...], "kwargs": {...}}}, see
        L{cluso_router.router.payload}) are both.
        """
        if data is None:
            return {}
        arguments = spelled_out(data)
        if arguments is not None:
            args, kwargs = arguments
            return {**self.invoke_values(args), **kwargs} if args else kwargs
        if isinstance(data, dict):
            return data
        names = [p.name for p in self.params]
        if isinstance(data, list):
            if len(data) > len(names):
                raise ProcedureError(
                    f"{self.procedure} takes at most {len(names)} argument(s)", "bad_arguments"
                )
            return dict(zip(names, data, strict=False))
        return {names[0]: data} if names else {}

    def procedure_callable(self) -> Callable[[Any], Any]:
        return lambda data: self(self.invoke_values(data))


class OperationEndpoint(JsonEndpoint):
    """
    The leaf serving the operations mounted at one path, one per method;
    a longer path below it is a 404, not the same route.
    """

    def __init__(self, operations: Mapping[bytes, Operation]) -> None:
        self.operations = dict(operations)
        super().__init__({method: _http_handler(op) for method, op in self.operations.items()})

    def render(self, request: Request) -> bytes | int:
        if any(request.postpath or ()):
            return NotFound().render(request)
        return super().render(request)

    def openapi_path_item(self, path: str) -> dict[str, Any]:
        return {
            method.decode().lower(): operation_object(op, method.decode(), path)
            for method, op in sorted(self.operations.items())
        }


def _http_handler(operation: Operation) -> Callable[[Request], Any]:
    def handle(request: Request) -> Any:
        values: Any = {}
        if operation.method != "GET" and operation.read_body and operation.params:
            assert request.content is not None
            raw = request.content.read()
            request.content.seek(0)
            if raw.strip() or any(p.required for p in operation.params):
                values = read_json(request)
            if not isinstance(values, dict):
                raise ApiError("Invalid request: body must be a JSON object")
        return operation(values)

    return handle


def _parent(root: Resource, path: str, create: bool) -> tuple[Resource | None, bytes]:
    """
    The resource that holds the last segment of C{path} below C{root}
    (made on the way as L{Directory} nodes when C{create}), and that segment.
    """
    *parents, leaf = path.strip("/").encode().split(b"/")
    node = root
    for name in parents:
        child = node.getStaticEntity(name)
        if child is None:
            if not create:
                return None, leaf
            child = Directory()
            node.putChild(name, child)
        node = child
    return node, leaf


def mount(root: Resource, operation: Operation) -> None:
    """
    Serve C{operation} at each of its paths below C{root}, creating the
    directories on the way and joining an endpoint already there.
    """
    for path in operation.paths:
        node, leaf = _parent(root, path, create=True)
        assert node is not None
        existing = node.getStaticEntity(leaf)
        operations = existing.operations if isinstance(existing, OperationEndpoint) else {}
        node.putChild(leaf, OperationEndpoint({**operations, operation.method.encode(): operation}))


def unmount(root: Resource, operation: Operation) -> None:
    """
    Stop serving C{operation}: its method leaves each of its paths, and a
    path left with no method goes.
    """
    for path in operation.paths:
        node, leaf = _parent(root, path, create=False)
        existing = node.getStaticEntity(leaf) if node is not None else None
        if node is None or not isinstance(existing, OperationEndpoint):
            continue
        method = operation.method.encode()
        if existing.operations.get(method) is not operation:
            continue
        rest = {m: op for m, op in existing.operations.items() if m != method}
        node.delEntity(leaf)
        if rest:
            node.putChild(leaf, OperationEndpoint(rest))


def mount_resource(root: Resource, path: str, resource: Resource) -> Callable[[], None]:
    """
    Put C{resource} at C{path} below C{root} (C{"/api/ai"}, say), creating
    the directories on the way; return what takes it away again.
    """
    node, leaf = _parent(root, path, create=True)
    assert node is not None
    node.putChild(leaf, resource)

    def unmount_resource() -> None:
        if node.getStaticEntity(leaf) is resource:
            node.delEntity(leaf)

    return unmount_resource


def install_operations(root: Resource, router: Any, operations: Sequence[Operation]) -> None:
    """
    Mount every operation's HTTP paths and register its procedure with the
    router, so both transports call the same callable with the same values.
    """
    for operation in operations:
        mount(root, operation)
        if operation.procedure is not None:
            router.register(operation.procedure, operation.procedure_callable())


# OpenAPI

_described: WeakKeyDictionary[Resource, Mapping[str, Mapping[str, Any]]] = WeakKeyDictionary()


def describe(resource: Resource, path_items: Mapping[str, Mapping[str, Any]]) -> None:
    """
    Describe a hand-written resource for the OpenAPI document: C{path_items}
    maps a path suffix below its mount point (C{""} for itself, or a
    template such as C{"/{channel}"}) to an OpenAPI path item.
    """
    _described[resource] = path_items


def envelope_schema(data: Schema) -> Schema:
    """
    The schema of a successful answer whose C{data} follows C{data}.
    """
    return {
        "type": "object",
        "required": ["success", "data", "error", "timestamp"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": data,
            "error": {"type": "string", "nullable": True, "enum": [None]},
            "timestamp": TIMESTAMP,
        },
    }


ERROR_ENVELOPE: Final[Schema] = {
    "type": "object",
    "required": ["success", "data", "error", "timestamp"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "data": {"nullable": True},
        "error": {"type": "string"},
        "timestamp": TIMESTAMP,
    },
}


def json_response(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_responses() -> dict[str, Any]:
    return {
        "400": json_response("The operation failed; `error` says why", ERROR_ENVELOPE),
        "413": json_response("The request body is larger than the limit", ERROR_ENVELOPE),
    }


def operation_object(operation: Operation, method: str, path: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_"),
        "summary": operation.summary,
        "tags": list(operation.tags),
        "responses": {
            "200": json_response(
                "The envelope with the result in `data`", envelope_schema(operation.data)
            ),
            **error_responses(),
        },
    }
    if operation.procedure:
        item["x-procedure"] = operation.procedure
    if method != "GET" and operation.read_body and operation.params:
        properties = {}
        for param in operation.params:
            properties[param.name] = {**param.schema}
            if param.description:
                properties[param.name]["description"] = param.description
        required = [p.name for p in operation.params if p.required]
        body_schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            body_schema["required"] = required
        item["requestBody"] = {
            "required": bool(required),
            "content": {"application/json": {"schema": body_schema}},
        }
    return item


def _walk(resource: Resource, path: str) -> Iterator[tuple[str, Resource]]:
    yield path, resource
    for name, child in sorted(getattr(resource, "children", {}).items()):
        yield from _walk(child, f"{path}/{name.decode('utf-8', 'replace')}")


def openapi_document(root: Resource) -> dict[str, Any]:
    """
    The OpenAPI 3.0 description of every described route below C{root}.
    """
    paths: dict[str, Any] = {}
    components: dict[str, Schema] = {}
    for path, resource in _walk(root, ""):
        if isinstance(resource, OperationEndpoint):
            paths[path] = resource.openapi_path_item(path)
            for operation in resource.operations.values():
                components.update(operation.schemas)
        for suffix, item in _described.get(resource, {}).items():
            paths[path + suffix] = dict(item)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cluso-router HTTP API",
            "version": __version__,
            "description": "Every answer is the envelope {success, data, error, timestamp}.",
        },
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }


class OpenApiResource(Resource):
    """
    C{GET /api/openapi.json}: the document itself, not wrapped in the
    envelope, so OpenAPI tools read it as it is.
    """

    isLeaf = True

    def __init__(self, root: Resource) -> None:
        super().__init__()
        self._root = root

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return dumps(openapi_document(self._root))

    def render(self, request: Request) -> bytes:
        if request.method == b"GET":
            return self.render_GET(request)
        request.setHeader(b"allow", b"GET")
        return write_envelope(request, 405, envelope(error="Method not allowed; use GET"))


def install_openapi(root: Resource) -> None:
    """
    Serve C{/api/openapi.json} and describe the core routes that are not
    built from operations (C{/api/health}, C{/api/events/{channel}}).
    """
    api = root.getStaticEntity(b"api")
    api.putChild(b"openapi.json", OpenApiResource(root))
    health = api.getStaticEntity(b"health")
    if health is not None:
        describe(
            health,
            {
                "": {
                    "get": {
                        "operationId": "get_api_health",
                        "summary": "Whether this node is up, and how busy it is",
                        "tags": ["server"],
                        "responses": {
                            "200": json_response("Node status", envelope_schema({"type": "object"}))
                        },
                    }
                }
            },
        )
    events = api.getStaticEntity(b"events")
    if events is not None:
        describe(
            events,
            {
                "/{channel}": {
                    "post": {
                        "operationId": "post_api_events_channel",
                        "summary": "Publish the JSON body as an event on a channel",
                        "tags": ["server"],
                        "parameters": [
                            {
                                "name": "channel",
                                "in": "path",
                                "required": True,
                                "schema": {"type": "string"},
                            }
                        ],
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": {}}},
                        },
                        "responses": {
                            "200": json_response(
                                "Delivery counts", envelope_schema({"type": "object"})
                            ),
                            **error_responses(),
                        },
                    }
                }
            },
        )
