"""
Operations declared once and served on every transport, and the OpenAPI
document generated from what is mounted.

An L{Operation} names the callable of the operations layer, its arguments
(with JSON schemas), the HTTP paths and the C{invoke} procedure that reach
it, whether it changes anything and how it reports progress.
L{install_operations} mounts it into the resource tree and registers the
procedure; every operation mounted below a root is kept in that root's
L{OperationTable}, which C{GET /api/openapi.json} and the MCP tools
(L{cluso_router.mcp}) read when asked, so anything mounted later, by any
module, is described too, and anything unmounted is gone.

A path segment written C{{name}} is a path parameter: it matches any
segment no named route at that place takes, and its value is the argument
of the L{Param} with that name and C{location="path"}.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from weakref import WeakKeyDictionary

from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router._json import dumps
from cluso_router._time import TIMESTAMP_SCHEMA
from cluso_router._version import __version__
from cluso_router.router.observers import Observers
from cluso_router.router.payload import spelled_out
from cluso_router.router.procedures import ProcedureError
from cluso_router.web.resources import (
    ApiError,
    Directory,
    JsonEndpoint,
    NotFound,
    envelope,
    path_values,
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

Location = Literal["body", "path", "query"]
_TEMPLATE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Param:
    """
    One argument: its JSON field name (the Python keyword is its snake_case
    form), schema, and other field names accepted for it.

    @ivar location: where HTTP carries it: a field of the JSON body, a
        C{{name}} segment of the path (always required), or a query
        parameter. C{invoke} carries every argument in its C{data}.
    """

    name: str
    schema: Schema = field(default_factory=lambda: STRING)
    required: bool = False
    description: str = ""
    aliases: tuple[str, ...] = ()
    location: Location = "body"

    @property
    def keyword(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()


#: How far one progress value of an operation says the work is, given the
#: value and how many values came with it so far (counting from 1): the
#: progress, the total when known, and a line for people.
ProgressMeter = Callable[[Any, int], tuple[float, float | None, str]]


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
    @ivar mutates: whether calling it changes the workspace or the
        server's state; by default C{True} for every method but C{GET}.
        C{GET} operations never do (a page of another origin may cause a
        C{GET}; see docs/security.md).
    @ivar progress: for an operation that reports progress while it works:
        its C{call} then takes a C{progress} keyword, a callable it calls
        with each progress value (the payload of the event its channel
        carries for the same step), and this measures one.
    @ivar procedure_call: what C{invoke} calls instead of the named
        arguments, for a procedure whose C{data} has older forms too; it
        takes C{data} (and C{progress=} when the operation reports progress).
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
    mutates: bool | None = None
    progress: ProgressMeter | None = None
    procedure_call: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.mutates is None:
            object.__setattr__(self, "mutates", self.method != "GET")
        elif self.mutates and self.method == "GET":
            raise ValueError(f"{self.summary!r}: a GET operation must not change anything")

    @property
    def name(self) -> str:
        """
        The procedure name, or for an operation without one a name made
        from its first path (C{/api/files/search} gives C{files.search}).
        """
        if self.procedure is not None:
            return self.procedure
        path = self.paths[0] if self.paths else self.summary
        return ".".join(p for p in re.split(r"[^A-Za-z0-9_-]+", path.removeprefix("/api/")) if p)

    @property
    def body_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "body")

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

    def __call__(
        self, values: Mapping[str, Any], progress: Callable[[Any], None] | None = None
    ) -> Any:
        """
        Call it with named JSON C{values}; C{progress}, when the operation
        reports progress, gets each progress value.
        """
        kwargs = self.bind(values)
        if progress is not None and self.progress is not None:
            kwargs["progress"] = progress
        return self.call(**kwargs)

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

    def procedure_callable(self) -> Callable[..., Any]:
        """
        The procedure registered as its C{invoke} name; it takes
        C{progress=} when the operation reports progress, so progressive
        callers (WAMP, MCP) get it.
        """
        if self.procedure_call is not None:
            return self.procedure_call
        if self.progress is not None:

            def progressive(data: Any, progress: Callable[[Any], None] | None = None) -> Any:
                return self(self.invoke_values(data), progress)

            return progressive
        return lambda data: self(self.invoke_values(data))


class OperationTable:
    """
    The operations served below one root resource, whoever mounted them and
    for as long as they are mounted: what the OpenAPI document and the MCP
    tools are made from.

    @ivar changes: told whenever an operation comes or goes.
    """

    def __init__(self) -> None:
        self._operations: dict[int, Operation] = {}
        self.changes = Observers()

    def add(self, operation: Operation) -> None:
        if id(operation) not in self._operations:
            self._operations[id(operation)] = operation
            self.changes.notify()

    def discard(self, operation: Operation) -> None:
        if self._operations.pop(id(operation), None) is not None:
            self.changes.notify()

    def __iter__(self) -> Iterator[Operation]:
        return iter(list(self._operations.values()))

    def __len__(self) -> int:
        return len(self._operations)

    def named(self, name: str) -> Operation | None:
        """
        The operation called C{name} (see L{Operation.name}), if one is mounted.
        """
        for operation in self._operations.values():
            if operation.name == name:
                return operation
        return None


_tables: WeakKeyDictionary[Resource, OperationTable] = WeakKeyDictionary()


def operation_table(root: Resource) -> OperationTable:
    """
    The table of operations mounted below C{root} (empty until one is).
    """
    table = _tables.get(root)
    if table is None:
        table = _tables[root] = OperationTable()
    return table


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


def _http_handler(operation: Operation) -> Callable[[Request], Any]:
    body_params = operation.body_params
    body_names = {name for p in body_params for name in (p.name, *p.aliases)}

    def handle(request: Request) -> Any:
        values: dict[str, Any] = {}
        if operation.method != "GET" and operation.read_body and body_params:
            assert request.content is not None
            raw = request.content.read()
            request.content.seek(0)
            if raw.strip() or any(p.required for p in body_params):
                body = read_json(request)
                if not isinstance(body, dict):
                    raise ApiError("Invalid request: body must be a JSON object")
                values = {k: v for k, v in body.items() if k in body_names}
        captured = path_values(request)
        for param in operation.params:
            if param.location == "path":
                values[param.name] = captured[param.name]
            elif param.location == "query":
                given = (request.args or {}).get(param.name.encode())
                if given:
                    values[param.name] = given[0].decode("utf-8", "replace")
        return operation(values)

    return handle


def _child(node: Resource, segment: str) -> Resource | None:
    """
    The child of C{node} at C{segment}: a named child, or for C{{name}}
    the variable child of that name.
    """
    template = _TEMPLATE.fullmatch(segment)
    if template is None:
        child: Resource | None = node.getStaticEntity(segment.encode())
        return child
    if isinstance(node, Directory) and node.variable and node.variable[0] == template[1]:
        return node.variable[1]
    return None


def _put(node: Resource, segment: str, child: Resource) -> None:
    template = _TEMPLATE.fullmatch(segment)
    if template is None:
        node.putChild(segment.encode(), child)
        return
    if not isinstance(node, Directory):
        raise ValueError(f"{node!r} cannot take the path parameter {segment}")
    if node.variable is not None and node.variable[0] != template[1]:
        raise ValueError(f"path parameter {segment} clashes with {{{node.variable[0]}}}")
    node.variable = (template[1], child)


def _remove(node: Resource, segment: str) -> None:
    if _TEMPLATE.fullmatch(segment) is None:
        node.delEntity(segment.encode())
    elif isinstance(node, Directory):
        node.variable = None


def _parent(root: Resource, path: str, create: bool) -> tuple[Resource | None, str]:
    """
    The resource that holds the last segment of C{path} below C{root}
    (made on the way as L{Directory} nodes when C{create}), and that segment.
    """
    *parents, leaf = path.strip("/").split("/")
    node = root
    for name in parents:
        child = _child(node, name)
        if child is None:
            if not create:
                return None, leaf
            child = Directory()
            _put(node, name, child)
        node = child
    return node, leaf


def mount(root: Resource, operation: Operation) -> None:
    """
    Serve C{operation} at each of its paths below C{root}, creating the
    directories on the way and joining an endpoint already there, and enter
    it in C{root}'s L{OperationTable} (also when it has no path).
    """
    operation_table(root).add(operation)
    for path in operation.paths:
        node, leaf = _parent(root, path, create=True)
        assert node is not None
        existing = _child(node, leaf)
        operations = existing.operations if isinstance(existing, OperationEndpoint) else {}
        _put(node, leaf, OperationEndpoint({**operations, operation.method.encode(): operation}))


def unmount(root: Resource, operation: Operation) -> None:
    """
    Stop serving C{operation}: its method leaves each of its paths, a path
    left with no method goes, and it leaves C{root}'s table.
    """
    operation_table(root).discard(operation)
    for path in operation.paths:
        node, leaf = _parent(root, path, create=False)
        existing = _child(node, leaf) if node is not None else None
        if node is None or not isinstance(existing, OperationEndpoint):
            continue
        method = operation.method.encode()
        if existing.operations.get(method) is not operation:
            continue
        rest = {m: op for m, op in existing.operations.items() if m != method}
        _remove(node, leaf)
        if rest:
            _put(node, leaf, OperationEndpoint(rest))


def mount_resource(root: Resource, path: str, resource: Resource) -> Callable[[], None]:
    """
    Put C{resource} at C{path} below C{root} (C{"/api/ai"}, say), creating
    the directories on the way; return what takes it away again.
    """
    node, leaf = _parent(root, path, create=True)
    assert node is not None
    _put(node, leaf, resource)

    def unmount_resource() -> None:
        if _child(node, leaf) is resource:
            _remove(node, leaf)

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
    parameters = [_parameter_object(p) for p in operation.params if p.location != "body"]
    if parameters:
        item["parameters"] = parameters
    body_params = operation.body_params
    if method != "GET" and operation.read_body and body_params:
        properties = {}
        for param in body_params:
            properties[param.name] = {**param.schema}
            if param.description:
                properties[param.name]["description"] = param.description
        required = [p.name for p in body_params if p.required]
        body_schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            body_schema["required"] = required
        item["requestBody"] = {
            "required": bool(required),
            "content": {"application/json": {"schema": body_schema}},
        }
    return item


def _parameter_object(param: Param) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "required": param.location == "path" or param.required,
        "schema": {**param.schema},
    }
    if param.description:
        item["description"] = param.description
    return item


def _walk(resource: Resource, path: str) -> Iterator[tuple[str, Resource]]:
    yield path, resource
    for name, child in sorted(getattr(resource, "children", {}).items()):
        yield from _walk(child, f"{path}/{name.decode('utf-8', 'replace')}")
    if isinstance(resource, Directory) and resource.variable is not None:
        name, child = resource.variable
        yield from _walk(child, f"{path}/{{{name}}}")


def openapi_document(root: Resource) -> dict[str, Any]:
    """
    The OpenAPI 3.0 description of every operation mounted below C{root}
    and every described resource.
    """
    paths: dict[str, Any] = {}
    components: dict[str, Schema] = {}
    for operation in operation_table(root):
        method = operation.method
        for path in operation.paths:
            item = paths.setdefault(path, {})
            item[method.lower()] = operation_object(operation, method, path)
        if operation.paths:
            components.update(operation.schemas)
    for path, resource in _walk(root, ""):
        for suffix, item in _described.get(resource, {}).items():
            paths[path + suffix] = dict(item)
    paths = {path: dict(sorted(item.items())) for path, item in sorted(paths.items())}
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
                        "description": (
                            "With batch=1 the body is a JSON array, each element one "
                            "event, published in order as one burst (at most 1000)."
                        ),
                        "tags": ["server"],
                        "parameters": [
                            {
                                "name": "channel",
                                "in": "path",
                                "required": True,
                                "schema": {"type": "string"},
                            },
                            {
                                "name": "batch",
                                "in": "query",
                                "required": False,
                                "schema": {"type": "string", "enum": ["1", "true", "0", "false"]},
                            },
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
