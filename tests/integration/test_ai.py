"""
The AI source against local fake providers speaking each provider's real
streaming format: the original's HTTP routes, the C{ai-response} channel,
cancelling, and every way an upstream answer can fail.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given
from hypothesis import strategies as st
from support.fakeproviders import (
    ABORT,
    HOLD,
    FakeProviderServer,
    Reply,
    anthropic_events,
    error_reply,
    gemini_events,
    openai_events,
    split,
)
from support.servers import start_service
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from cluso_router.service import ClusoService
from cluso_router.sources import discover_sources
from cluso_router.sources.ai.routes import STREAM_ID_HEADER
from cluso_router.sources.ai.service import AIService, AISettings
from cluso_router.sources.ai.sse import ServerSentEvent, SSEParser
from cluso_router.tap import Options
from cluso_router.testing import RunningServer, WebSocketTestClient, connect_client, until

TEXTS = ["Hel", "lo, ", "wörld", "\n", '"quoted" ', "end."]
KEYS = {"google": "g-key", "anthropic": "a-key", "openai": "o-key"}
MODELS = {"google": "gemini-2.0-flash", "anthropic": "claude-3-5-haiku", "openai": "gpt-4o-mini"}


@pytest.fixture(autouse=True)
def no_unhandled_errors() -> Iterator[None]:
    """
    Fail a test that leaves an unhandled error in a Deferred or logs a
    failure.
    """
    failures: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_failure") is not None or "Unhandled error" in str(
            event.get("log_format", "")
        ):
            failures.append(str(event.get("log_format")) + " " + str(event.get("log_failure")))

    globalLogPublisher.addObserver(observe)
    yield
    gc.collect()
    globalLogPublisher.removeObserver(observe)
    assert failures == []


class Harness:
    def __init__(self, service: ClusoService, fake: FakeProviderServer, url: str) -> None:
        self.service = service
        self.fake = fake
        self.url = url
        self.ws_url = "ws" + url[4:] + "ws"

    async def subscribed(self) -> WebSocketTestClient:
        client = await connect_client(self.ws_url)
        await client.next_message()
        await client.request({"type": "subscribe", "channel": "ai-response", "id": "s"})
        return client


async def start_server(tmp_path: Path, fake: FakeProviderServer, **options: Any) -> RunningServer:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    ai_options = {
        "ai-google-url": fake.url + "/v1beta",
        "ai-anthropic-url": fake.url + "/v1",
        "ai-google-key": KEYS["google"],
        "ai-anthropic-key": KEYS["anthropic"],
        "ai-openai-key": KEYS["openai"],
        **options,
    }
    return start_service(root, auth="none", sources=("ai",), source_options={"ai": ai_options})


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """
    A server running only the AI source (built by the plugin loader) with
    every provider's base URL on one fake provider server.
    """
    for name in ("GOOGLE_API_KEY", "VITE_GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    fake = await FakeProviderServer().start()
    # The OpenAI provider is pointed at the fake through the environment.
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    running = await start_server(tmp_path, fake)
    yield Harness(running.service, fake, running.url)
    await running.service.stopService()
    await fake.stop()


def body(provider: str, **more: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Say hello"}],
        "modelId": MODELS[provider],
        "system": "Be brief.",
        **more,
    }


def wire(provider: str, texts: list[str]) -> list[bytes]:
    return {"google": gemini_events, "anthropic": anthropic_events, "openai": openai_events}[
        provider
    ](texts)


class OriginalClient:
    """
    Reads a stream the way the original UI does: each network chunk split
    on newlines with no carry-over, so an event split across two writes
    breaks it.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = False
        self.chunks = 0

    def chunk(self, data: bytes) -> None:
        self.chunks += 1
        for line in data.decode("utf-8").split("\n"):
            if not line.startswith("data: "):
                continue
            payload = line[len("data: ") :]
            if payload == "[DONE]":
                self.done = True
            else:
                self.events.append(json.loads(payload))

    @property
    def text(self) -> str:
        return "".join(e["text"] for e in self.events if e["type"] == "text-delta")


async def stream(url: str, request: dict[str, Any]) -> tuple[Any, OriginalClient]:
    response = await treq.post(url + "api/ai/chat/stream", json=request, unbuffered=True)
    client = OriginalClient()
    await treq.collect(response, client.chunk)
    return response, client


async def answer_events(client: WebSocketTestClient, timeout: float = 10.0) -> list[dict[str, Any]]:
    """
    The C{ai_chunk} events of one answer, up to its finished event.
    """
    events = []
    while True:
        message = await client.next_message(timeout)
        assert message["type"] == "event"
        assert message["channel"] == "ai-response"
        events.append(message["data"])
        if message["data"]["finished"]:
            return events


def stepwise(events: list[bytes]) -> list[Any]:
    """
    The events with each one cut in three pieces that arrive separately,
    a keep-alive comment between events.
    """
    steps: list[Any] = []
    for event in events:
        steps += split(event, 3, len(event) - 2)
        steps += [0.01, b": keep-alive\n\n"]
    return steps


@pytest.mark.parametrize("provider", ["google", "openai", "anthropic"])
@pytest_twisted.ensureDeferred
async def test_stream_reaches_http_and_websocket_alike(harness: Harness, provider: str) -> None:
    """
    An answer streamed by each provider, its events split across TCP
    packets with keep-alive comments between them, reaches the original
    client's line parser whole and in order, with finish and [DONE]; the
    ai-response subscriber sees the same text, index 0.. without gaps and
    one finished event.
    """
    harness.fake.replies.append(Reply(steps=stepwise(wire(provider, TEXTS))))
    client = await harness.subscribed()
    response, http = await stream(harness.url, body(provider))
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    assert http.text == "".join(TEXTS)
    assert [e["type"] for e in http.events][-1] == "finish"
    assert http.done
    events = await answer_events(client)
    assert [e["chunk"] for e in events[:-1]] == [e["text"] for e in http.events[:-1]]
    assert [e["index"] for e in events] == list(range(len(events)))
    assert events[-1]["chunk"] == ""
    assert "error" not in events[-1]
    assert len({e["id"] for e in events}) == 1
    await client.close()


@pytest_twisted.ensureDeferred
async def test_upstream_requests_use_each_providers_format(harness: Harness) -> None:
    """
    Each provider gets its own URL, key header and body: Gemini with
    alt=sse and x-goog-api-key, OpenAI with a bearer token, Anthropic with
    x-api-key and its version; a key in the request's providers wins.
    """
    for provider in ("google", "openai", "anthropic"):
        harness.fake.replies.append(Reply(steps=wire(provider, ["ok"])))
    await stream(harness.url, body("google", temperature=0.5, maxTokens=64))
    await stream(harness.url, body("openai", providers={"openai": "request-key", "codex": "x"}))
    await stream(harness.url, body("anthropic"))
    google, openai, anthropic = harness.fake.requests
    assert google.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert google.headers["x-goog-api-key"] == "g-key"
    assert google.body == {
        "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 64},
    }
    assert openai.path == "/v1/chat/completions"
    assert openai.headers["authorization"] == "Bearer request-key"
    assert openai.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert openai.body["stream"] is True
    assert anthropic.path == "/v1/messages"
    assert anthropic.headers["x-api-key"] == "a-key"
    assert anthropic.headers["anthropic-version"] == "2023-06-01"
    assert anthropic.body["system"] == "Be brief."
    assert anthropic.body["max_tokens"] == 4096


@pytest_twisted.ensureDeferred
async def test_chat_answers_whole_with_usage(harness: Harness) -> None:
    """
    POST /api/ai/chat answers the whole text and token usage in the envelope.
    """
    harness.fake.replies.append(Reply(steps=stepwise(openai_events(TEXTS))))
    response = await treq.post(harness.url + "api/ai/chat", json=body("openai"))
    answer = await response.json()
    assert response.code == 200
    assert answer["success"] is True
    assert answer["data"] == {
        "text": "".join(TEXTS),
        "usage": {"promptTokens": 5, "completionTokens": len(TEXTS), "totalTokens": 5 + len(TEXTS)},
    }


@pytest_twisted.ensureDeferred
async def test_providers_and_request_errors_as_the_original(harness: Harness) -> None:
    """
    GET providers reports configured keys; missing fields are a 400 with
    VALIDATION_ERROR, bad JSON a 500 with AI_ERROR; an unknown model or a
    missing key is a 200 with success false on /chat and an error event
    without [DONE] on the stream.
    """
    response = await treq.get(harness.url + "api/ai/providers")
    assert (await response.json())["data"] == {"google": True, "anthropic": True, "openai": True}
    response = await treq.post(harness.url + "api/ai/chat", json={"modelId": "gpt-4o"})
    assert response.code == 400
    assert await response.json() == {
        "success": False,
        "error": "Missing required fields: messages, modelId",
        "code": "VALIDATION_ERROR",
    }
    response = await treq.post(harness.url + "api/ai/chat/stream", data=b"{not json")
    assert response.code == 500
    assert (await response.json())["code"] == "AI_ERROR"
    response = await treq.post(
        harness.url + "api/ai/chat", json={**body("openai"), "modelId": "llama-3"}
    )
    answer = await response.json()
    assert (response.code, answer["success"], answer["data"]) == (200, False, None)
    assert answer["error"] == "Unknown model provider for: llama-3"
    _, http = await stream(harness.url, {**body("openai"), "modelId": "mistral-large"})
    assert http.events == [{"type": "error", "error": "Unknown model provider for: mistral-large"}]
    assert not http.done
    assert harness.fake.requests == []


@pytest_twisted.ensureDeferred
async def test_missing_key_is_reported_in_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Without a key in the request, the options or the environment, the
    stream ends with the original's message naming the variable to set.
    """
    for name in ("GOOGLE_API_KEY", "VITE_GOOGLE_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    fake = await FakeProviderServer().start()
    running = await start_server(tmp_path, fake, **{"ai-google-key": None})
    try:
        url = running.url
        response = await treq.get(url + "api/ai/providers")
        assert (await response.json())["data"]["google"] is False
        _, http = await stream(url, body("google"))
        assert http.events == [
            {
                "type": "error",
                "error": "Google API key not configured. Pass google API key in providers "
                "or set GOOGLE_API_KEY.",
            }
        ]
    finally:
        await running.service.stopService()
        await fake.stop()


FAILURES = [
    pytest.param(
        error_reply(401, "API key not valid"),
        "Google rejected the API key (HTTP 401): API key not valid",
        id="401",
    ),
    pytest.param(
        error_reply(429, "Resource exhausted", **{"retry-after": "17"}),
        "Google rate limit exceeded (HTTP 429); retry after 17 s: Resource exhausted",
        id="429",
    ),
    pytest.param(
        error_reply(503, "The model is overloaded"),
        "Google server error (HTTP 503): The model is overloaded",
        id="503",
    ),
    pytest.param(
        Reply(steps=[*gemini_events(["partial", "more"])[:1], 0.05, ABORT]),
        "Google connection lost mid-stream",
        id="reset",
    ),
    pytest.param(
        Reply(steps=[b'data: {"candidates": [{"content": \r\n\r\n']),
        "Google sent a malformed stream: Google sent an event that is not JSON",
        id="malformed",
    ),
    pytest.param(
        Reply(steps=[*gemini_events(["a", "b"], finish="SAFETY")]),
        "Google stopped the answer: SAFETY",
        id="blocked",
    ),
]


@pytest.mark.parametrize(("reply", "error"), FAILURES)
@pytest_twisted.ensureDeferred
async def test_upstream_failures_end_the_stream_with_a_clear_error(
    harness: Harness, reply: Reply, error: str
) -> None:
    """
    A 401, a 429 with retry-after, a 5xx, a connection reset mid-stream,
    malformed SSE and a blocked answer each end the HTTP stream with one
    error event (no [DONE]) and the channel with one finished event
    carrying the same error.
    """
    harness.fake.replies.append(reply)
    client = await harness.subscribed()
    _, http = await stream(harness.url, body("google"))
    last = http.events[-1]
    assert last["type"] == "error"
    assert last["error"].startswith(error)
    assert [e["type"] for e in http.events[:-1]] == ["text-delta"] * (len(http.events) - 1)
    assert not http.done
    events = await answer_events(client)
    assert events[-1]["error"] == last["error"]
    assert [e["index"] for e in events] == list(range(len(events)))
    await client.close()


@pytest_twisted.ensureDeferred
async def test_openai_stream_cut_before_done_is_an_error(harness: Harness) -> None:
    """
    An OpenAI-compatible stream that ends cleanly but before its last
    event is reported as cut short, not as a complete answer.
    """
    harness.fake.replies.append(Reply(steps=openai_events(["a", "b"])[:2]))
    _, http = await stream(harness.url, body("openai"))
    assert http.events[-1] == {
        "type": "error",
        "error": "OpenAI ended the stream before the answer was complete",
    }


@pytest_twisted.ensureDeferred
async def test_invoke_chat_and_cancel_close_the_upstream_request(harness: Harness) -> None:
    """
    invoke ai.chat answers with the stream id at once, the answer comes on
    ai-response, and ai.cancel ends it with one finished event and closes
    the upstream connection; cancelling again is a not_found error.
    """
    harness.fake.replies.append(Reply(steps=[*anthropic_events(["first"])[:4], HOLD]))
    client = await harness.subscribed()
    reply = await client.request(
        {"type": "invoke", "id": 1, "channel": "ai.chat", "data": body("anthropic")}
    )
    stream_id = reply["data"]["id"]
    first = await client.next_message()
    assert first["data"] == {**first["data"], "id": stream_id, "chunk": "first", "index": 0}
    await until(lambda: bool(harness.fake.requests))
    reply = await client.request(
        {"type": "invoke", "id": 2, "channel": "ai.cancel", "data": stream_id}
    )
    assert reply["data"] == {"id": stream_id, "cancelled": True}
    events = await answer_events(client)
    assert events == [{**events[0], "index": 1, "finished": True, "error": "Stream cancelled"}]
    assert await harness.fake.requests[0].closed is True
    again = await client.request(
        {"type": "invoke", "id": 3, "channel": "ai.cancel", "data": stream_id}
    )
    assert again["code"] == "not_found"
    bad = await client.request({"type": "invoke", "id": 4, "channel": "ai.chat", "data": {}})
    assert bad["error"] == "Missing required fields: messages, modelId"
    await client.close()


@pytest_twisted.ensureDeferred
async def test_delete_cancels_an_http_stream(harness: Harness) -> None:
    """
    DELETE /api/ai/chat/<id> with the id from the stream's header ends the
    HTTP stream with an error event and closes the upstream request.
    """
    harness.fake.replies.append(Reply(steps=[*openai_events(["one"])[:2], HOLD]))
    response = await treq.post(
        harness.url + "api/ai/chat/stream", json=body("openai"), unbuffered=True
    )
    stream_id = response.headers.getRawHeaders(STREAM_ID_HEADER)[0].decode()
    http = OriginalClient()
    received = treq.collect(response, http.chunk)
    await until(lambda: http.text == "one")
    deleted = await treq.delete(harness.url + f"api/ai/chat/{stream_id}")
    assert (await deleted.json())["data"] == {"id": stream_id, "cancelled": True}
    await received
    assert http.events[-1] == {"type": "error", "error": "Stream cancelled"}
    assert await harness.fake.requests[0].closed is True
    missing = await treq.delete(harness.url + f"api/ai/chat/{stream_id}")
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_client_going_away_closes_the_upstream_request(harness: Harness) -> None:
    """
    When the HTTP client of a stream disconnects, the upstream request is
    closed and the channel gets the finished event.
    """
    harness.fake.replies.append(Reply(steps=[*gemini_events(["x", "y"])[:1], HOLD]))
    client = await harness.subscribed()
    response = await treq.post(
        harness.url + "api/ai/chat/stream", json=body("google"), unbuffered=True
    )
    first = await client.next_message()
    assert first["data"]["chunk"] == "x"
    response.original.deliverBody(_Dropper())
    assert await harness.fake.requests[0].closed is True
    events = await answer_events(client)
    assert events[-1]["error"] == "Client disconnected"
    await client.close()


class _Dropper(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.stopProducing()  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_stalled_stream_times_out_on_the_injected_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An upstream that sends part of an answer and then nothing is abandoned
    when the idle timeout passes on the service's clock: one finished
    event with the stall error, and the upstream connection closed.
    """
    fake = await FakeProviderServer().start()
    running = start_service(tmp_path, sources=(), auth="none")
    service = running.service
    clock = Clock()
    ai = AIService(
        service.source_context().for_source("ai", {}),
        AISettings({"openai": "k"}, {"openai": fake.url + "/v1"}, idle_timeout=30.0),
        clock=clock,
    )
    ai.setServiceParent(service)
    try:
        fake.replies.append(Reply(steps=[*openai_events(["so far"])[:2], HOLD]))
        harness = Harness(service, fake, running.url)
        client = await harness.subscribed()
        reply = await client.request(
            {"type": "invoke", "id": 1, "channel": "ai.chat", "data": body("openai")}
        )
        assert (await client.next_message())["data"]["chunk"] == "so far"
        clock.advance(29.0)
        assert ai.streams
        clock.advance(1.0)
        events = await answer_events(client)
        assert events == [
            {
                **events[0],
                "id": reply["data"]["id"],
                "index": 1,
                "finished": True,
                "error": "OpenAI stream stalled: no data for 30 seconds",
            }
        ]
        assert await fake.requests[0].closed is True
        await client.close()
    finally:
        await service.stopService()
        await fake.stop()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["", "update"]),
            st.text(max_size=20).filter(lambda t: "\r" not in t and "\n" not in t),
        ),
        max_size=5,
    ),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_sse_parser_is_indifferent_to_how_the_bytes_are_split(
    events: list[tuple[str, str]], newline: bytes, cuts: list[int]
) -> None:
    """
    Any split of a stream (CR, LF or CRLF line ends, comments between
    events) gives the same events as reading it whole.
    """
    wire = b""
    for name, data in events:
        if name:
            wire += b"event: " + name.encode() + newline
        wire += b": comment" + newline + b"data: " + data.encode() + newline + newline
    expected = [ServerSentEvent(name or "message", data) for name, data in events]
    parser = SSEParser()
    got = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(wire)):
        got += parser.feed(wire[start:cut])
        start = cut
    got += parser.feed(wire[start:])
    if newline == b"\r":
        got += parser.feed(b"\n")
    assert got == expected


def test_sse_parser_joins_multi_line_data() -> None:
    """
    Several data lines of one event are joined with newlines.
    """
    assert SSEParser().feed(b"data: a\ndata:b\n\n") == [ServerSentEvent("message", "a\nb")]


def test_plugin_is_discovered_and_takes_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The ai plugin is found in cluso_plugins; its options override the
    environment's keys and base URLs.
    """
    assert "ai" in discover_sources().names
    monkeypatch.setenv("VITE_GOOGLE_API_KEY", "from-env")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-anthropic")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    options = Options()
    options.parseOptions(["--ai-anthropic-key", "opt", "--ai-openai-url", "http://127.0.0.1:9/v1"])
    settings = AISettings.from_options(options["config"].source_options["ai"])
    assert settings.keys == {"google": "from-env", "anthropic": "opt"}
    assert settings.base_urls["openai"] == "http://127.0.0.1:9/v1"


@pytest_twisted.ensureDeferred
async def test_answers_streamed_at_once_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    With --ai-max-streams 3, three held answers are under way and the
    fourth is refused at once (invoke: too_many_streams; HTTP: 503 on both
    routes) without opening an upstream connection; once one ends, a new
    answer starts.
    """
    for name in ("GOOGLE_API_KEY", "VITE_GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    fake = await FakeProviderServer().start()
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    running = await start_server(tmp_path, fake, **{"ai-max-streams": 3})
    harness = Harness(running.service, fake, running.url)
    try:
        for _ in range(3):
            fake.replies.append(Reply(steps=[*openai_events(["held"])[:2], HOLD]))
        client = await harness.subscribed()
        ids = []
        for n in range(3):
            reply = await client.request(
                {"type": "invoke", "id": n, "channel": "ai.chat", "data": body("openai")}
            )
            ids.append(reply["data"]["id"])
        await until(lambda: len(fake.requests) == 3)
        refused = await client.request(
            {"type": "invoke", "id": 9, "channel": "ai.chat", "data": body("openai")}
        )
        assert refused["code"] == "too_many_streams"
        for route in ("api/ai/chat", "api/ai/chat/stream"):
            response = await treq.post(running.url + route, json.dumps(body("openai")).encode())
            assert response.code == 503, route
            assert "Too many AI answers" in (await response.content()).decode()
        assert len(fake.requests) == 3
        cancelled = await client.request(
            {"type": "invoke", "id": 10, "channel": "ai.cancel", "data": ids[0]}
        )
        assert cancelled["data"]["cancelled"] is True
        await until(lambda: len(running.service.sources.started["ai"].streams) == 2)
        fake.replies.append(Reply(steps=openai_events(["again"])))
        again = await client.request(
            {"type": "invoke", "id": 11, "channel": "ai.chat", "data": body("openai")}
        )
        assert "id" in again["data"]
        await client.close()
    finally:
        await running.service.stopService()
        await fake.stop()
