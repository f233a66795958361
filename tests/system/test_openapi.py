"""
C{GET /api/openapi.json}: generated from what is mounted, it describes
every files and git route with its request body and envelope; schemathesis
then drives a live C{twistd cluso} from it and no request may get a 5xx or
a body that is not the JSON envelope.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import schemathesis
import treq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from support.gitrepo import make_repo, push_to_bare_remote
from support.servers import start_twistd, stop_child_server
from twisted.web.resource import Resource

from cluso_router.web.resources import JsonEndpoint
from cluso_router.web.routes import Operation, Param, describe, install_operations, openapi_document


@pytest_twisted.ensureDeferred
async def test_the_document_describes_every_files_and_git_route(server: Any) -> None:
    """
    Every files and git route appears with its method, the alias routes
    too, POST bodies with their fields and required ones, and the envelope
    of its answers.
    """
    response = await treq.get(server.url + "api/openapi.json")
    assert response.code == 200
    document = json.loads(await response.content())
    assert document["openapi"].startswith("3.0")
    paths = document["paths"]
    file_routes = (
        "read", "write", "create", "delete", "rename", "copy", "list", "list-directory",
        "mkdir", "create-directory", "rmdir", "delete-directory", "exists", "stat", "glob",
        "tree",
    )  # fmt: skip
    git_routes = (
        "checkout", "checkout-file", "create-branch", "commit", "push", "pull", "stash",
        "stash-pop",
    )  # fmt: skip
    expected_posts = {f"/api/files/{r}" for r in file_routes} | {
        f"/api/git/{r}" for r in git_routes
    }
    expected_gets = {"/api/files/cwd"} | {
        f"/api/git/{r}" for r in ("current-branch", "branches", "status")
    }
    for path in expected_posts:
        assert list(paths[path]) == ["post"], path
    for path in expected_gets:
        assert list(paths[path]) == ["get"], path
    rename = paths["/api/files/rename"]["post"]
    body = rename["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["oldPath", "newPath"]
    assert rename["x-procedure"] == "files.renameFile"
    ok = rename["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["required"] == ["success", "data", "error", "timestamp"]
    assert "requestBody" not in paths["/api/git/push"]["post"]
    assert "TreeNode" in document["components"]["schemas"]


@pytest_twisted.ensureDeferred
async def test_unknown_routes_and_wrong_methods_answer_with_the_envelope(server: Any) -> None:
    """
    An unknown path under /api/files or /api/git is a JSON 404, a wrong
    method a JSON 405 naming the allowed one.
    """
    for path in ("api/files/nope", "api/git/nope/deeper", "api/files/read/x"):
        response = await treq.post(server.url + path, data=b"{}")
        body = json.loads(await response.content())
        assert (response.code, body["success"]) == (404, False), path
        assert body["error"] == f"Not found: /{path}"
    response = await treq.get(server.url + "api/files/read")
    body = json.loads(await response.content())
    assert (response.code, body["error"]) == (405, "Method not allowed; use POST")
    assert response.headers.getRawHeaders("allow") == ["POST"]


def test_routes_declared_later_by_any_module_appear() -> None:
    """
    The document is built from the resource tree when asked for: an
    operation installed afterwards, and a hand-written resource described
    with describe(), both show up.
    """
    root = Resource()
    registered: dict[str, Any] = {}

    class Router:
        def register(self, name: str, procedure: Any) -> None:
            registered[name] = procedure

    before = openapi_document(root)["paths"]
    install_operations(
        root,
        Router(),
        [
            Operation(
                lambda pattern=None: [],
                "Search",
                paths=("/api/files/search",),
                procedure="files.searchInFiles",
                params=(Param("pattern", required=True),),
            )
        ],
    )
    custom = JsonEndpoint({b"GET": lambda request: {}})
    root.getStaticEntity(b"api").putChild(b"custom", custom)
    describe(custom, {"": {"get": {"summary": "custom", "responses": {}}}})
    paths = openapi_document(root)["paths"]
    assert before == {}
    assert set(paths) == {"/api/files/search", "/api/custom"}
    assert "files.searchInFiles" in registered


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[str]:
    """
    A real twistd cluso on a git repository with a bare remote, with the
    sources that serve routes under /api/ (search, validation) but no
    watchers.
    """
    root = make_repo(tmp_path / "root", {"src/a.txt": "a\n"})
    push_to_bare_remote(root, tmp_path / "remote.git")
    child = start_twistd(root, "--sources", "search,validation")
    try:
        yield child.url
    finally:
        stop_child_server(child)


@pytest.fixture
def api_schema(live_api: str) -> Any:
    return schemathesis.openapi.from_url(live_api + "api/openapi.json")


#: Routes that keep the original's own answers: the AI routes have their
#: own envelope and a 500 for a bad body (cluso-compat.md section 2.6).
OWN_ENVELOPE = ("/api/ai/",)


def json_envelope(ctx: Any, response: Any, case: Any) -> None:
    """
    Every answer under /api/ is the JSON envelope.
    """
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), content_type
    body = json.loads(response.content)
    assert set(body) == {"success", "data", "error", "timestamp"}, body
    assert body["success"] is (200 <= response.status_code < 300)


def test_no_request_gets_a_server_error_or_a_non_json_answer(api_schema: Any) -> None:
    """
    For every described operation (but the AI routes, which keep the
    original's own envelope), generated requests with valid and with
    invalid bodies get 2xx or 4xx, always as the JSON envelope matching the
    document. Examples are few and derandomised, so this stays quick.
    """
    failures = []
    operations = [
        operation
        for operation in (result.ok() for result in api_schema.get_all_operations())
        if not operation.path.startswith(OWN_ENVELOPE)
    ]
    assert len(operations) >= 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=5,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            def exercise(case: Any) -> None:
                response = case.call(timeout=30)
                case.validate_response(
                    response,
                    checks=[not_a_server_error, json_envelope, response_schema_conformance],
                )

            try:
                exercise()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as e:
                failures.append(f"{operation.label} ({mode}): {e}")
    assert failures == [], "\n\n".join(failures)
