"""
What a chat request asks for, checked the way the original server checked
it, and which provider and key serve it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cluso_router.router.procedures import ProcedureError

#: Provider ids, in the order of C{GET /api/ai/providers}.
PROVIDERS: Final = ("google", "anthropic", "openai")

#: Display names and environment variables of each provider's key.
PROVIDER_NAMES: Final = {"google": "Google", "anthropic": "Anthropic", "openai": "OpenAI"}
KEY_VARIABLES: Final = {
    "google": ("GOOGLE_API_KEY", "VITE_GOOGLE_API_KEY"),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
}

MISSING_FIELDS: Final = "Missing required fields: messages, modelId"


class ChatError(Exception):
    """
    An answer cannot be produced; C{message} is what the client is shown.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyStreams(ProcedureError):
    """
    As many answers as allowed are being streamed; try again shortly.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many AI answers at once (at most {limit}); try again when one finishes",
            "too_many_streams",
        )
        self.limit = limit


class InvalidChatRequest(ChatError):
    """
    The request itself is wrong (a missing field, a bad message list).
    """


@dataclass(frozen=True)
class Message:
    role: str
    text: str


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model_id: str
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Any) -> ChatRequest:
        """
        Read a request body: C{{messages, modelId, system?, temperature?,
        maxTokens?, providers?}}. Required fields are checked for
        truthiness, as the original did.
        """
        if not isinstance(body, dict) or not body.get("messages") or not body.get("modelId"):
            raise InvalidChatRequest(MISSING_FIELDS)
        raw_messages, model_id = body["messages"], body["modelId"]
        if not isinstance(raw_messages, list):
            raise InvalidChatRequest("messages must be an array of {role, content}")
        if not isinstance(model_id, str):
            raise InvalidChatRequest("modelId must be a string")
        messages = tuple(_message(m, i) for i, m in enumerate(raw_messages))
        system = body.get("system")
        if system is not None and not isinstance(system, str):
            raise InvalidChatRequest("system must be a string")
        temperature = body.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool) or not isinstance(temperature, int | float)
        ):
            raise InvalidChatRequest("temperature must be a number")
        max_tokens = body.get("maxTokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidChatRequest("maxTokens must be a positive integer")
        providers = body.get("providers")
        keys = (
            {k: v for k, v in providers.items() if isinstance(v, str) and v}
            if isinstance(providers, dict)
            else {}
        )
        return cls(messages, model_id, system or None, temperature, max_tokens, keys)


def _message(raw: Any, index: int) -> Message:
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise InvalidChatRequest(f"messages[{index}] must be an object with a role")
    role, content = raw["role"], raw.get("content")
    if role not in ("user", "assistant", "system"):
        raise InvalidChatRequest(f"messages[{index}]: unknown role {role!r}")
    if isinstance(content, str):
        return Message(role, content)
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidChatRequest(
                    f"messages[{index}]: unsupported content part {kind!r}; only text parts are"
                )
            texts.append(str(part.get("text", "")))
        return Message(role, "".join(texts))
    raise InvalidChatRequest(f"messages[{index}]: content must be a string or an array of parts")


def route(model_id: str) -> tuple[str, str]:
    """
    The provider serving C{model_id} and the model name to send it: by the
    original's prefixes (C{gemini-}, C{claude-}, C{gpt-}/C{o1}/C{o3}), or
    an explicit C{google:}, C{anthropic:} or C{openai:} prefix, which is how
    a model of a local OpenAI-compatible server is named.
    """
    lowered = model_id.lower()
    provider, sep, rest = model_id.partition(":")
    if sep and provider.lower() in PROVIDERS and rest:
        return provider.lower(), rest
    if lowered.startswith("gemini-"):
        return "google", model_id
    if lowered.startswith("claude-"):
        return "anthropic", model_id
    if lowered.startswith(("gpt-", "o1", "o3")):
        return "openai", model_id
    raise ChatError(f"Unknown model provider for: {model_id}")


def missing_key_message(provider: str) -> str:
    return (
        f"{PROVIDER_NAMES[provider]} API key not configured. Pass {provider} API key in "
        f"providers or set {KEY_VARIABLES[provider][0]}."
    )


def environment_keys(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    The keys found in the environment, by provider.
    """
    environ = os.environ if environ is None else environ
    found = {}
    for provider, names in KEY_VARIABLES.items():
        for name in names:
            if environ.get(name):
                found[provider] = environ[name]
                break
    return found
