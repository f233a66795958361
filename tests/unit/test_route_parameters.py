"""
Path and query parameters of declared operations: a C{{name}} segment
takes any segment no named route takes, whatever the order of mounting;
its value and query values reach the operation; both are described as
OpenAPI parameters; unmounting takes the parameter route away.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from cluso_router.web.resources import Directory, NotFound, path_values
from cluso_router.web.routes import (
    Operation,
    OperationEndpoint,
    Param,
    mount,
    openapi_document,
    unmount,
)


def resolve(root: Directory, path: str) -> tuple[Any, DummyRequest]:
    request = DummyRequest(path.lstrip("/").encode().split(b"/"))
    return getChildForRequest(root, request), request


def operations() -> tuple[Operation, Operation]:
    by_id = Operation(
        lambda item_id=None: item_id,
        "One item",
        paths=("/api/items/{itemId}",),
        method="DELETE",
        params=(Param("itemId", location="path"),),
    )
    named = Operation(
        lambda: "all",
        "Every item",
        paths=("/api/items/cleanup",),
        method="DELETE",
    )
    return by_id, named


def test_a_named_route_wins_over_a_parameter_in_either_mounting_order() -> None:
    """
    /api/items/cleanup is the named route and /api/items/x the parameter
    route with itemId "x" (percent-decoded once), whichever was mounted
    first; an empty segment is not a value.
    """
    for order in (0, 1):
        root = Directory({b"api": Directory()})
        by_id, named = operations()
        for operation in (by_id, named) if order == 0 else (named, by_id):
            mount(root, operation)
        resource, _ = resolve(root, "/api/items/cleanup")
        assert resource.operations == {b"DELETE": named}
        resource, request = resolve(root, "/api/items/a%2Fb")
        assert resource.operations == {b"DELETE": by_id}
        assert path_values(request) == {"itemId": "a/b"}
        resource, _ = resolve(root, "/api/items/")
        assert isinstance(resource, NotFound)


def test_parameters_are_described_and_unmounting_removes_the_route() -> None:
    """
    The OpenAPI document names the template path with its path and query
    parameters and no request body for them; unmount takes it away.
    """
    root = Directory({b"api": Directory()})
    read = Operation(
        lambda item_id=None, field=None: None,
        "A field of an item",
        paths=("/api/items/{itemId}/field",),
        method="GET",
        params=(Param("itemId", location="path"), Param("field", required=True, location="query")),
    )
    mount(root, read)
    item = openapi_document(root)["paths"]["/api/items/{itemId}/field"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in item["parameters"]] == [
        ("itemId", "path", True),
        ("field", "query", True),
    ]
    assert "requestBody" not in item
    resource, request = resolve(root, "/api/items/7/field")
    assert isinstance(resource, OperationEndpoint)
    assert path_values(request) == {"itemId": "7"}
    unmount(root, read)
    assert openapi_document(root)["paths"] == {}
