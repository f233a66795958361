"""
Local stand-ins for the AI providers' streaming APIs: real twisted.web
servers on loopback that answer with each provider's wire format, written
out by hand here, in pieces and with pauses as a test scripts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

#: Script steps: bytes are written, a float pauses that many seconds,
#: ABORT drops the connection, HOLD leaves the response open forever.
ABORT = "abort"
HOLD = "hold"
Step = bytes | float | str


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    steps: Sequence[Step] = ()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: Fires when the response ends or the client goes away, with True
    #: when the client went away first.
    closed: Deferred[bool] = field(default_factory=Deferred)


class _Endpoint(Resource):
    isLeaf = True

    def __init__(self, server: FakeProviderServer) -> None:
        super().__init__()
        self._server = server

    def render(self, request: Request) -> int:
        assert request.content is not None
        raw = request.content.read()
        received = Received(
            method=request.method.decode(),
            path=request.uri.decode(),
            headers={
                k.decode().lower(): v[0].decode()
                for k, v in request.requestHeaders.getAllRawHeaders()
            },
            body=json.loads(raw) if raw else None,
        )
        self._server.requests.append(received)
        reply = self._server.replies.pop(0) if self._server.replies else Reply(404, {}, [b"{}"])
        request.setResponseCode(reply.status)
        for name, value in reply.headers.items():
            request.setHeader(name, value)
        request.notifyFinish().addCallbacks(
            lambda _: received.closed.callback(False), lambda _: received.closed.callback(True)
        )
        self._play(request, list(reply.steps))
        return NOT_DONE_YET

    def _play(self, request: Request, steps: list[Step]) -> None:
        while steps:
            if request.finished or request.channel is None:
                return
            step = steps.pop(0)
            if isinstance(step, bytes):
                request.write(step)
            elif isinstance(step, float):
                reactor.callLater(step, self._play, request, steps)  # type: ignore[attr-defined]
                return
            elif step == ABORT:
                assert request.transport is not None
                request.transport.abortConnection()
                return
            elif step == HOLD:
                request.write(b"")
                return
        if request.channel is not None and not request.finished:
            request.finish()


class FakeProviderServer:
    """
    One fake provider: queue L{Reply}s in C{replies}, read what arrived in
    C{requests}; every path answers.
    """

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Received] = []
        self.port: IListeningPort | None = None

    async def start(self) -> FakeProviderServer:
        site = Site(_Endpoint(self))
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        return self

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}"

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()


def split(data: bytes, *at: int, pause: float = 0.02) -> list[Step]:
    """
    C{data} cut at the offsets C{at}, with pauses between the pieces so each
    arrives in a TCP segment of its own.
    """
    steps: list[Step] = []
    start = 0
    for offset in [*at, len(data)]:
        steps += [data[start:offset], pause]
        start = offset
    return steps[:-1]


# Each provider's events, as its API writes them.


def gemini_events(texts: Iterable[str], finish: str = "STOP") -> list[bytes]:
    """
    Gemini C{streamGenerateContent?alt=sse}: one JSON object per event,
    CRLF line ends, the finish reason and usage on the last one.
    """
    texts = list(texts)
    events = []
    for i, text in enumerate(texts):
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-2.0-flash"}
        if i == len(texts) - 1:
            candidate["finishReason"] = finish
            chunk["usageMetadata"] = {
                "promptTokenCount": 7,
                "candidatesTokenCount": len(texts),
                "totalTokenCount": 7 + len(texts),
            }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
    return events


def openai_events(texts: Iterable[str], done: bool = True) -> list[bytes]:
    """
    Chat completions with C{stream: true}: a role delta, content deltas, a
    finish reason, a usage chunk, then C{[DONE]}.
    """

    def chunk(choices: list[Any], **more: Any) -> bytes:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": choices,
            **more,
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    texts = list(texts)
    events = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])]
    events += [chunk([{"index": 0, "delta": {"content": t}, "finish_reason": None}]) for t in texts]
    events.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    events.append(
        chunk([], usage={"prompt_tokens": 5, "completion_tokens": len(texts), "total_tokens": 9})
    )
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def anthropic_events(texts: Iterable[str]) -> list[bytes]:
    """
    Messages streaming: named events, a C{ping} among them, text deltas in
    one content block, usage in C{message_start} and C{message_delta}.
    """

    def event(name: str, body: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **body})}\n\n".encode()

    texts = list(texts)
    return [
        event(
            "message_start",
            {
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-3-5-haiku-latest",
                    "usage": {"input_tokens": 11, "output_tokens": 1},
                }
            },
        ),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {}),
        *[
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": t}})
            for t in texts
        ],
        event("content_block_stop", {"index": 0}),
        event(
            "message_delta",
            {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(texts)}},
        ),
        event("message_stop", {}),
    ]


def error_reply(status: int, message: str, **headers: str) -> Reply:
    body = json.dumps({"error": {"code": status, "message": message, "status": "ERROR"}})
    return Reply(status, {"content-type": "application/json", **headers}, [body.encode()])
