"""
C{/api/ai/*}, as the original server answered it: C{GET providers},
C{POST chat} (the whole answer), C{POST chat/stream} (server-sent events),
and C{DELETE chat/<id>} to cancel an answer.

The stream writes each event in one piece, so clients that split network
chunks on newlines without carrying a partial line over still read whole
events. Its C{X-Cluso-Stream-Id} header names the answer for cancelling
and for matching its C{ai_chunk} events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cluso_router._json import JSONError, dumps, loads
from cluso_router.sources.ai.request import ChatRequest, InvalidChatRequest, TooManyStreams
from cluso_router.sources.ai.stream import AnswerEvent, Delta, Finished
from cluso_router.web.resources import Directory, JsonEndpoint, envelope, write_envelope
from cluso_router.web.routes import describe, json_response

if TYPE_CHECKING:
    from cluso_router.sources.ai.service import AIService

STREAM_ID_HEADER: Final = b"x-cluso-stream-id"


def ai_resource(service: AIService) -> Resource:
    """
    What C{service} serves at C{/api/ai}.
    """
    resource = Directory(
        {
            b"providers": JsonEndpoint({b"GET": lambda request: service.available()}),
            b"chat": ChatResource(service),
        }
    )
    describe(resource, OPENAPI)
    return resource


def _bare_error(request: Request, status: int, message: str, code: str) -> bytes:
    """
    The original's pre-check failures: no C{data}, no C{timestamp}, a C{code}.
    """
    return write_envelope(request, status, {"success": False, "error": message, "code": code})


def _read_request(request: Request) -> ChatRequest | bytes:
    """
    The chat request in the body, or the finished error response.
    """
    raw = request.content.read() if request.content is not None else b""
    try:
        body = loads(raw)
    except JSONError as e:
        return _bare_error(request, 500, f"Invalid JSON body: {e}", "AI_ERROR")
    try:
        return ChatRequest.from_json(body)
    except InvalidChatRequest as e:
        return _bare_error(request, 400, e.message, "VALIDATION_ERROR")


class ChatResource(Resource):
    """
    C{POST /api/ai/chat}, with C{stream} and C{<id>} below it.
    """

    def __init__(self, service: AIService) -> None:
        super().__init__()
        self._service = service
        self.putChild(b"stream", StreamResource(service))

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not path:
            return self
        return CancelResource(self._service, path.decode("utf-8", "replace"))

    def render_POST(self, request: Request) -> bytes | int:
        chat = _read_request(request)
        if isinstance(chat, bytes):
            return chat
        try:
            stream = self._service.start(chat)
        except TooManyStreams as e:
            return write_envelope(request, 503, envelope(error=e.message))
        gone = [False]

        def disconnected(_: object) -> None:
            gone[0] = True
            stream.cancel("Client disconnected")

        request.notifyFinish().addErrback(disconnected)

        def answered(result: Finished) -> None:
            if gone[0]:
                return
            if result.error is not None:
                body: Mapping[str, Any] = envelope(error=result.error)
            else:
                data: dict[str, Any] = {"text": result.text}
                if result.usage:
                    data["usage"] = result.usage
                body = envelope(data)
            request.write(write_envelope(request, 200, body))
            request.finish()

        stream.when_finished().addCallback(answered)
        return NOT_DONE_YET

    def render(self, request: Request) -> bytes | int:
        if request.method == b"POST":
            return self.render_POST(request)
        request.setHeader(b"allow", b"POST")
        return write_envelope(request, 405, envelope(error="Method not allowed; use POST"))


class StreamResource(Resource):
    """
    C{POST /api/ai/chat/stream}: C{data: {"type":"text-delta","text":…}}
    per piece, then C{finish} and C{[DONE]}, or one C{error} event.
    """

    isLeaf = True

    def __init__(self, service: AIService) -> None:
        super().__init__()
        self._service = service

    def render(self, request: Request) -> bytes | int:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return write_envelope(request, 405, envelope(error="Method not allowed; use POST"))
        chat = _read_request(request)
        if isinstance(chat, bytes):
            return chat
        if self._service.busy():
            busy = TooManyStreams(self._service.settings.max_streams)
            return _bare_error(request, 503, busy.message, "AI_BUSY")
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        gone = [False]

        def write(event: AnswerEvent) -> None:
            if gone[0]:
                return
            if isinstance(event, Delta):
                request.write(_event({"type": "text-delta", "text": event.text}))
                return
            if event.error is not None:
                request.write(_event({"type": "error", "error": event.error}))
            else:
                request.write(_event({"type": "finish", "usage": event.usage}))
                request.write(b"data: [DONE]\n\n")
            gone[0] = True
            request.finish()

        stream = self._service.start(chat, write)
        if not gone[0]:
            request.setHeader(STREAM_ID_HEADER, stream.id.encode())
            request.write(b"")

            def disconnected(_: object) -> None:
                gone[0] = True
                stream.cancel("Client disconnected")

            request.notifyFinish().addErrback(disconnected)
        return NOT_DONE_YET


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


class CancelResource(Resource):
    """
    C{DELETE /api/ai/chat/<id>}: cancel a running answer.
    """

    isLeaf = True

    def __init__(self, service: AIService, stream_id: str) -> None:
        super().__init__()
        self._service = service
        self._stream_id = stream_id

    def render(self, request: Request) -> bytes:
        if request.method != b"DELETE":
            request.setHeader(b"allow", b"DELETE")
            return write_envelope(request, 405, envelope(error="Method not allowed; use DELETE"))
        if not self._service.cancel(self._stream_id):
            return write_envelope(
                request, 404, envelope(error=f"No such AI stream: {self._stream_id}")
            )
        return write_envelope(request, 200, envelope({"id": self._stream_id, "cancelled": True}))


_CHAT_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["messages", "modelId"],
                "properties": {
                    "messages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"type": "string", "enum": ["user", "assistant", "system"]},
                                "content": {},
                            },
                        },
                    },
                    "modelId": {"type": "string"},
                    "system": {"type": "string"},
                    "temperature": {"type": "number"},
                    "maxTokens": {"type": "integer"},
                    "providers": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        }
    },
}

OPENAPI: Final[dict[str, dict[str, Any]]] = {
    "/providers": {
        "get": {
            "operationId": "get_api_ai_providers",
            "summary": "Which providers have a key configured",
            "tags": ["ai"],
            "responses": {"200": json_response("{google, anthropic, openai} booleans", {})},
        }
    },
    "/chat": {
        "post": {
            "operationId": "post_api_ai_chat",
            "summary": "The whole answer of a model; provider failures are 200 with success false",
            "tags": ["ai"],
            "requestBody": _CHAT_BODY,
            "responses": {"200": json_response("{text, usage?} in the envelope", {})},
        }
    },
    "/chat/stream": {
        "post": {
            "operationId": "post_api_ai_chat_stream",
            "summary": "The answer as server-sent events: text-delta, finish, [DONE] or error",
            "tags": ["ai"],
            "requestBody": _CHAT_BODY,
            "responses": {
                "200": {
                    "description": "data: lines, one JSON event each",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/chat/{id}": {
        "delete": {
            "operationId": "delete_api_ai_chat_id",
            "summary": "Cancel a running answer and close its upstream request",
            "tags": ["ai"],
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": json_response("{id, cancelled}", {})},
        }
    },
}
