"""
The wire formats of the providers' streaming APIs: how a request is
written, and how the events of the answer become text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from zope.interface import Attribute, Interface, implementer

from cluso_router._json import dumps, loads
from cluso_router.sources.ai.request import ChatError, ChatRequest
from cluso_router.sources.ai.sse import ServerSentEvent, StreamFormatError

DEFAULT_BASE_URLS: Final = {
    "google": "https://generativelanguage.googleapis.com/v1beta",
    "anthropic": "https://api.anthropic.com/v1",
    "openai": "https://api.openai.com/v1",
}
ANTHROPIC_VERSION: Final = "2023-06-01"
#: Anthropic requires a limit; used when the request has none.
ANTHROPIC_MAX_TOKENS: Final = 4096


@dataclass(frozen=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class IAnswerReader(Interface):
    """
    Reads the events of one streamed answer.
    """

    usage = Attribute("Token counts seen so far (C{dict}).")
    complete = Attribute("C{True} once the provider said the answer is whole.")

    def event(sse: ServerSentEvent) -> list[str]:
        """
        The text pieces in C{sse}.

        @raise ChatError: the provider reported an error in the stream.
        @raise StreamFormatError: C{sse} is not what the provider sends.
        """

    def ended() -> None:
        """
        The body ended; raise L{ChatError} if the answer was cut short.
        """


class IChatProvider(Interface):
    id = Attribute("Provider id: google, anthropic or openai.")
    name = Attribute("Display name used in error messages.")

    def build(request: ChatRequest, model: str, key: str | None) -> UpstreamRequest:
        """
        The streaming HTTP request for C{request}.
        """

    def reader() -> IAnswerReader:
        """
        A reader for the answer to one request.
        """


def _json(sse: ServerSentEvent, provider: str) -> dict[str, Any]:
    try:
        value = loads(sse.data)
    except ValueError:
        raise StreamFormatError(
            f"{provider} sent an event that is not JSON: {sse.data[:120]!r}"
        ) from None
    if not isinstance(value, dict):
        raise StreamFormatError(f"{provider} sent an event that is not an object")
    return value


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or dumps(error).decode())
    return str(error)


def _cut_short(provider: str) -> ChatError:
    return ChatError(f"{provider} ended the stream before the answer was complete")


def _usage(prompt: Any, completion: Any) -> dict[str, int]:
    usage = {}
    if isinstance(prompt, int):
        usage["promptTokens"] = prompt
    if isinstance(completion, int):
        usage["completionTokens"] = completion
    if len(usage) == 2:
        usage["totalTokens"] = usage["promptTokens"] + usage["completionTokens"]
    return usage


def _system(request: ChatRequest) -> str | None:
    parts = [request.system] if request.system else []
    parts += [m.text for m in request.messages if m.role == "system"]
    return "\n\n".join(parts) or None


@implementer(IAnswerReader)
class GoogleReader:
    def __init__(self) -> None:
        self.usage: dict[str, int] = {}
        self.complete = False

    def event(self, sse: ServerSentEvent) -> list[str]:
        value = _json(sse, "Google")
        if "error" in value:
            raise ChatError(f"Google error: {_error_text(value['error'])}")
        feedback = value.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            raise ChatError(f"Google blocked the prompt: {feedback['blockReason']}")
        metadata = value.get("usageMetadata")
        if isinstance(metadata, dict):
            self.usage = _usage(
                metadata.get("promptTokenCount"), metadata.get("candidatesTokenCount")
            )
        candidates = value.get("candidates") or []
        if not isinstance(candidates, list) or not candidates:
            return []
        candidate = candidates[0]
        if not isinstance(candidate, dict):
            raise StreamFormatError("Google sent a candidate that is not an object")
        parts = (candidate.get("content") or {}).get("parts") or []
        texts = [
            p["text"]
            for p in parts
            if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
        ]
        reason = candidate.get("finishReason")
        if reason:
            if reason not in ("STOP", "MAX_TOKENS"):
                raise ChatError(f"Google stopped the answer: {reason}")
            self.complete = True
        return texts

    def ended(self) -> None:
        if not self.complete:
            raise _cut_short("Google")


@implementer(IChatProvider)
@dataclass(frozen=True)
class GoogleProvider:
    """
    Gemini C{streamGenerateContent} with C{alt=sse}.
    """

    base_url: str = DEFAULT_BASE_URLS["google"]
    id: str = "google"
    name: str = "Google"

    def build(self, request: ChatRequest, model: str, key: str | None) -> UpstreamRequest:
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.text}]}
            for m in request.messages
            if m.role != "system"
        ]
        body: dict[str, Any] = {"contents": contents}
        system = _system(request)
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if config:
            body["generationConfig"] = config
        url = f"{self.base_url.rstrip('/')}/models/{quote(model, safe='')}:streamGenerateContent"
        headers = {"x-goog-api-key": key} if key else {}
        return UpstreamRequest(url + "?alt=sse", headers, body)

    def reader(self) -> IAnswerReader:
        return GoogleReader()


@implementer(IAnswerReader)
class OpenAIReader:
    def __init__(self) -> None:
        self.usage: dict[str, int] = {}
        self.complete = False
        self._finished = False

    def event(self, sse: ServerSentEvent) -> list[str]:
        if sse.data.strip() == "[DONE]":
            self.complete = True
            return []
        value = _json(sse, "OpenAI")
        if "error" in value:
            raise ChatError(f"OpenAI error: {_error_text(value['error'])}")
        usage = value.get("usage")
        if isinstance(usage, dict):
            self.usage = _usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        texts = []
        for choice in value.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                texts.append(content)
            if choice.get("finish_reason"):
                self._finished = True
        return texts

    def ended(self) -> None:
        if not (self.complete or self._finished):
            raise _cut_short("OpenAI")


@implementer(IChatProvider)
@dataclass(frozen=True)
class OpenAIProvider:
    """
    Chat completions with C{stream: true}; any server speaking that API
    (llama.cpp, vLLM, Ollama) works with its base URL.
    """

    base_url: str = DEFAULT_BASE_URLS["openai"]
    id: str = "openai"
    name: str = "OpenAI"

    @property
    def custom(self) -> bool:
        return self.base_url.rstrip("/") != DEFAULT_BASE_URLS["openai"]

    def build(self, request: ChatRequest, model: str, key: str | None) -> UpstreamRequest:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.text} for m in request.messages]
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens" if self.custom else "max_completion_tokens"] = request.max_tokens
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return UpstreamRequest(f"{self.base_url.rstrip('/')}/chat/completions", headers, body)

    def reader(self) -> IAnswerReader:
        return OpenAIReader()


@implementer(IAnswerReader)
class AnthropicReader:
    def __init__(self) -> None:
        self.usage: dict[str, int] = {}
        self.complete = False
        self._counts: dict[str, Any] = {}

    def event(self, sse: ServerSentEvent) -> list[str]:
        value = _json(sse, "Anthropic")
        kind = value.get("type", sse.event)
        if kind == "error":
            raise ChatError(f"Anthropic error: {_error_text(value.get('error'))}")
        if kind == "message_start":
            usage = (value.get("message") or {}).get("usage") or {}
            self._counts.update(usage)
        elif kind == "message_delta":
            self._counts.update(value.get("usage") or {})
        elif kind == "message_stop":
            self.complete = True
        elif kind == "content_block_delta":
            delta = value.get("delta") or {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return [delta["text"]]
        if self._counts:
            self.usage = _usage(self._counts.get("input_tokens"), self._counts.get("output_tokens"))
        return []

    def ended(self) -> None:
        if not self.complete:
            raise _cut_short("Anthropic")


@implementer(IChatProvider)
@dataclass(frozen=True)
class AnthropicProvider:
    """
    The Messages API with C{stream: true}.
    """

    base_url: str = DEFAULT_BASE_URLS["anthropic"]
    id: str = "anthropic"
    name: str = "Anthropic"

    def build(self, request: ChatRequest, model: str, key: str | None) -> UpstreamRequest:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or ANTHROPIC_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": m.text} for m in request.messages if m.role != "system"
            ],
            "stream": True,
        }
        system = _system(request)
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return UpstreamRequest(f"{self.base_url.rstrip('/')}/messages", headers, body)

    def reader(self) -> IAnswerReader:
        return AnthropicReader()
