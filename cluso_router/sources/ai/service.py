"""
The AI source: answers streamed from a provider to HTTP clients and to the
C{ai-response} channel at once, and the procedures that start and cancel
them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cluso_router.router.procedures import ProcedureError
from cluso_router.sources.ai.channel import AI_RESPONSE, ai_chunk
from cluso_router.sources.ai.providers import (
    DEFAULT_BASE_URLS,
    AnthropicProvider,
    GoogleProvider,
    IChatProvider,
    OpenAIProvider,
)
from cluso_router.sources.ai.request import (
    PROVIDERS,
    ChatError,
    ChatRequest,
    InvalidChatRequest,
    TooManyStreams,
    environment_keys,
    missing_key_message,
    route,
)
from cluso_router.sources.ai.routes import ai_resource
from cluso_router.sources.ai.stream import (
    DEFAULT_IDLE_TIMEOUT,
    ChatStream,
    Delta,
    Finished,
    Listener,
)
from cluso_router.sources.context import SourceContext
from cluso_router.sources.lifecycle import SourceService

#: Base URL variables read when no option names one.
BASE_URL_VARIABLES: Final = {
    "google": "GOOGLE_GEMINI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "openai": "OPENAI_BASE_URL",
}


#: Answers streamed at once unless C{--ai-max-streams} says otherwise.
DEFAULT_MAX_STREAMS: Final = 16


@dataclass(frozen=True)
class AISettings:
    """
    Keys and base URLs by provider id, and how long an upstream may stay
    silent.
    """

    keys: Mapping[str, str] = field(default_factory=dict)
    base_urls: Mapping[str, str] = field(default_factory=dict)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Answers streamed at once (each holds an upstream connection).
    max_streams: int = DEFAULT_MAX_STREAMS

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> AISettings:
        """
        Options (C{ai-<provider>-key}, C{ai-<provider>-url},
        C{ai-idle-timeout}) first, then the environment.
        """
        environ = os.environ if environ is None else environ
        keys = environment_keys(environ)
        urls = {}
        for provider in PROVIDERS:
            if options.get(f"ai-{provider}-key"):
                keys[provider] = options[f"ai-{provider}-key"]
            url = options.get(f"ai-{provider}-url") or environ.get(BASE_URL_VARIABLES[provider])
            if url:
                urls[provider] = url
        timeout = options.get("ai-idle-timeout") or DEFAULT_IDLE_TIMEOUT
        streams = options.get("ai-max-streams") or DEFAULT_MAX_STREAMS
        return cls(keys, urls, float(timeout), int(streams))


class AIService(SourceService):
    """
    Runs answers; every one is also published on C{ai-response} as
    C{ai_chunk} events: C{index} from 0 without gaps, then exactly one
    C{finished: true} event, carrying C{error} when the answer failed.
    """

    log = Logger()

    def __init__(
        self,
        context: SourceContext,
        settings: AISettings | None = None,
        clock: IReactorTime | None = None,
        http: Any = None,
    ) -> None:
        super().__init__(context)
        if settings is None:
            settings = AISettings.from_options(context.options)
        self.settings = settings
        self.broadcaster = context.broadcaster
        self.reactor = context.reactor
        self.clock: IReactorTime = clock if clock is not None else context.reactor
        self.http = http
        self.providers: dict[str, IChatProvider] = {
            "google": GoogleProvider(settings.base_urls.get("google", DEFAULT_BASE_URLS["google"])),
            "anthropic": AnthropicProvider(
                settings.base_urls.get("anthropic", DEFAULT_BASE_URLS["anthropic"])
            ),
            "openai": OpenAIProvider(settings.base_urls.get("openai", DEFAULT_BASE_URLS["openai"])),
        }
        self.streams: dict[str, ChatStream] = {}

    def startSource(self) -> None:
        if self.http is None:
            self.http = _http_client(self.reactor)
        context = self.context
        context.claim_channel(AI_RESPONSE)
        context.provide("ai.chat", self._invoke_chat)
        context.provide("ai.cancel", self._invoke_cancel)
        context.provide("ai.providers", lambda _: self.available())
        context.mount("/api/ai", ai_resource(self))

    def stopSource(self) -> Deferred[Any]:
        streams = list(self.streams.values())
        for stream in streams:
            stream.cancel("Server shutting down")
        return DeferredList([stream.when_finished() for stream in streams])

    def available(self) -> dict[str, bool]:
        """
        Which providers can answer without a key in the request.
        """
        openai = self.providers["openai"]
        return {
            provider: provider in self.settings.keys
            or (provider == "openai" and isinstance(openai, OpenAIProvider) and openai.custom)
            for provider in PROVIDERS
        }

    def resolve(self, request: ChatRequest) -> tuple[IChatProvider, str, str | None]:
        """
        The provider, model name and key for C{request}: the key from the
        request's C{providers}, else the configured one.

        @raise ChatError: unknown model, or no key.
        """
        provider_id, model = route(request.model_id)
        provider = self.providers[provider_id]
        key = request.keys.get(provider_id) or self.settings.keys.get(provider_id)
        keyless = isinstance(provider, OpenAIProvider) and provider.custom
        if not key and not keyless:
            raise ChatError(missing_key_message(provider_id))
        return provider, model, key

    def start(self, request: ChatRequest, listener: Listener | None = None) -> ChatStream:
        """
        Start answering C{request}; C{listener} sees the answer before the
        channel does.

        @raise TooManyStreams: C{max_streams} answers are under way.
        """
        if self.busy():
            raise TooManyStreams(self.settings.max_streams)
        stream = ChatStream(
            uuid.uuid4().hex,
            request,
            self.resolve,
            self.http,
            self.clock,
            self.settings.idle_timeout,
            burst=self.broadcaster.burst,
        )
        self.streams[stream.id] = stream
        if listener is not None:
            stream.add_listener(listener)
        stream.add_listener(lambda event: self._publish(stream.id, event))
        stream.start()
        return stream

    def busy(self) -> bool:
        """
        Whether C{max_streams} answers are under way, so none can start.
        """
        return len(self.streams) >= self.settings.max_streams

    def cancel(self, stream_id: str) -> bool:
        """
        Cancel a running answer; C{False} when there is none by that id.
        """
        stream = self.streams.get(stream_id)
        return stream is not None and stream.cancel()

    def _publish(self, stream_id: str, event: Delta | Finished) -> None:
        if isinstance(event, Delta):
            ai_chunk(self.broadcaster, stream_id, event.text, event.index, False)
            return
        self.streams.pop(stream_id, None)
        extra: dict[str, Any] = {"usage": event.usage}
        if event.error is not None:
            extra["error"] = event.error
            self.log.info("AI stream {id} failed: {error}", id=stream_id, error=event.error)
        ai_chunk(self.broadcaster, stream_id, "", event.index, True, **extra)

    def _invoke_chat(self, data: Any) -> dict[str, str]:
        try:
            request = ChatRequest.from_json(data)
        except InvalidChatRequest as e:
            raise ProcedureError(e.message, "validation_error") from None
        try:
            self.resolve(request)
        except ChatError as e:
            raise ProcedureError(e.message, "ai_error") from None
        return {"id": self.start(request).id}

    def _invoke_cancel(self, data: Any) -> dict[str, Any]:
        stream_id = data.get("id") if isinstance(data, dict) else data
        if not isinstance(stream_id, str) or not stream_id:
            raise ProcedureError("Missing required field: id", "validation_error")
        if not self.cancel(stream_id):
            raise ProcedureError(f"No such AI stream: {stream_id}", "not_found")
        return {"id": stream_id, "cancelled": True}


def _http_client(reactor: Any) -> Any:
    """
    A treq client whose connections are not reused, so cancelling an
    answer always closes its upstream connection.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, pool=pool, connectTimeout=30))
