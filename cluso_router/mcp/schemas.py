"""
A tool's input and output JSON Schemas, from the same declaration that
gives the HTTP route and its OpenAPI description.

Declarations are written in the OpenAPI 3.0 dialect (C{nullable}, C{$ref}
to C{#/components/schemas/...}); MCP wants JSON Schema 2020-12 with an
object at the root. A result whose schema is not an object is given to the
client as C{{"result": value}}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cluso_router.web.routes import Operation, Schema

_COMPONENTS: Final = "#/components/schemas/"
#: The name a result that is not an object goes under.
RESULT: Final = "result"


def json_schema(schema: Any) -> Any:
    """
    C{schema} in JSON Schema 2020-12: C{nullable} becomes a type that also
    allows null, and references to OpenAPI components point into C{$defs}.
    """
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    converted = {key: json_schema(value) for key, value in schema.items() if key != "nullable"}
    ref = converted.get("$ref")
    if isinstance(ref, str) and ref.startswith(_COMPONENTS):
        converted["$ref"] = "#/$defs/" + ref.removeprefix(_COMPONENTS)
    if schema.get("nullable") is True:
        kind = converted.get("type")
        if isinstance(kind, str):
            converted["type"] = [kind, "null"]
        elif "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    return converted


def input_schema(operation: Operation) -> dict[str, Any]:
    """
    An object with one property per parameter, the required ones required.
    """
    properties: dict[str, Any] = {}
    for param in operation.params:
        properties[param.name] = json_schema(param.schema)
        if param.description:
            properties[param.name] = {**properties[param.name], "description": param.description}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [param.name for param in operation.params if param.required]
    if required:
        schema["required"] = required
    return schema


def wraps_result(operation: Operation) -> bool:
    """
    Whether the operation's result is not an object, so it goes under
    L{RESULT} in the structured content.
    """
    return _resolved(operation.data, operation.schemas).get("type") != "object"


def output_schema(operation: Operation) -> dict[str, Any] | None:
    """
    The schema of the structured content, or C{None} when the declaration
    says nothing about the result.
    """
    if not operation.data:
        return None
    definitions = {name: json_schema(s) for name, s in operation.schemas.items()}
    if wraps_result(operation):
        root: dict[str, Any] = {
            "type": "object",
            "required": [RESULT],
            "properties": {RESULT: json_schema(operation.data)},
        }
    else:
        root = dict(json_schema(_resolved(operation.data, operation.schemas)))
    if definitions:
        root["$defs"] = definitions
    return root


def _resolved(schema: Schema, schemas: Mapping[str, Schema]) -> Schema:
    """
    C{schema}, or the named schema it refers to.
    """
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_COMPONENTS):
        return schemas.get(ref.removeprefix(_COMPONENTS), schema)
    return schema
