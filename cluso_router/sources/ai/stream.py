"""
One streamed answer: the upstream request through treq, its body read as
it arrives, each piece of text handed to the listeners, and exactly one
end, successful or not, whatever happens upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Final, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from cluso_router._json import dumps, loads
from cluso_router.router.broadcaster import Burst
from cluso_router.sources.ai.providers import IAnswerReader, IChatProvider
from cluso_router.sources.ai.request import ChatError, ChatRequest
from cluso_router.sources.ai.sse import SSEParser, StreamFormatError

#: Seconds without a byte from upstream after which an answer is abandoned.
DEFAULT_IDLE_TIMEOUT: Final = 60.0
ERROR_BODY_LIMIT: Final = 64 * 1024
CANCELLED: Final = "Stream cancelled"


@dataclass(frozen=True)
class Delta:
    """
    The C{index}th piece of the answer's text.
    """

    index: int
    text: str


@dataclass(frozen=True)
class Finished:
    """
    The end of an answer: C{index} is the number of pieces before it.
    """

    index: int
    text: str
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None


AnswerEvent = Delta | Finished
Listener = Callable[[AnswerEvent], object]
#: Picks the provider, model name and key for a request, or raises ChatError.
Resolver = Callable[[ChatRequest], tuple[IChatProvider, str, str | None]]


class _BodyReader(Protocol):
    """
    Hands each piece of a response body to C{on_data}; C{done} fires when
    the body ends, or when the reader stopped it because it had enough.
    """

    def __init__(self, on_data: Callable[[bytes], bool], done: Deferred[None]) -> None:
        self._on_data = on_data
        self._done = done
        self._enough = False
        self._failure: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._enough or self._failure is not None:
            return
        try:
            self._enough = self._on_data(data)
        except Exception:
            self._failure = Failure()
            self.stop()
            return
        if self._enough:
            self.stop()

    def stop(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._done.called:
            return
        if self._failure is not None:
            self._done.errback(self._failure)
        elif self._enough or reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(None)
        else:
            self._done.errback(reason)


class ChatStream:
    """
    Streams one answer from its provider to its listeners.

    @ivar id: how clients name this answer (to cancel it, or to match its
        C{ai_chunk} events).
    """

    log = Logger()

    def __init__(
        self,
        id: str,
        request: ChatRequest,
        resolve: Resolver,
        http: Any,
        clock: IReactorTime,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        burst: Burst = nullcontext,
    ) -> None:
        self.id = id
        self.request = request
        self._resolve = resolve
        self._http = http
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._burst = burst
        self._listeners: list[Listener] = []
        self._texts: list[str] = []
        self._provider_name = "The AI provider"
        self._timer: IDelayedCall | None = None
        self._waiting: Deferred[Any] | None = None
        self._body: _BodyReader | None = None
        self._abort_reason: str | None = None
        self.result: Finished | None = None
        self._waiters: list[Deferred[Finished]] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        ensureDeferred(self._run())

    def cancel(self, reason: str = CANCELLED) -> bool:
        """
        Stop the answer and close the upstream request.

        @return: C{False} when it had already ended.
        """
        if self.result is not None:
            return False
        self._abort(reason)
        return True

    def when_finished(self) -> Deferred[Finished]:
        if self.result is not None:
            return succeed(self.result)
        d: Deferred[Finished] = Deferred()
        self._waiters.append(d)
        return d

    async def _run(self) -> None:
        usage: dict[str, int] = {}
        try:
            provider, model, key = self._resolve(self.request)
            self._provider_name = provider.name
            upstream = provider.build(self.request, model, key)
            reader = provider.reader()
            response = await self._wait(
                self._http.post(
                    upstream.url,
                    data=dumps(upstream.body),
                    headers={
                        "content-type": "application/json",
                        "accept": "text/event-stream",
                        **upstream.headers,
                    },
                    unbuffered=True,
                )
            )
            if not 200 <= response.code < 300:
                detail = await self._error_body(response)
                raise ChatError(status_message(provider.name, response, detail))
            await self._stream(response, reader)
            usage = reader.usage
        except ChatError as e:
            self._finish(e.message)
        except StreamFormatError as e:
            self._finish(f"{self._provider_name} sent a malformed stream: {e}")
        except Exception as e:
            self._finish(self._describe(e))
        else:
            self._finish(None, usage)

    async def _wait(self, d: Deferred[Any]) -> Any:
        if self._abort_reason is not None:
            d.cancel()
            raise ChatError(self._abort_reason)
        self._waiting = d
        self._arm()
        try:
            return await d
        finally:
            self._waiting = None

    async def _stream(self, response: IResponse, reader: IAnswerReader) -> None:
        parser = SSEParser()

        def on_data(data: bytes) -> bool:
            self._arm()
            # The chunks of one read reach subscribers as one burst.
            with self._burst():
                for event in parser.feed(data):
                    for text in reader.event(event):
                        if text:
                            self._emit(text)
                    if reader.complete:
                        return True
            return False

        await self._read(response, on_data)
        reader.ended()

    async def _read(self, response: IResponse, on_data: Callable[[bytes], bool]) -> None:
        done: Deferred[None] = Deferred()
        self._body = _BodyReader(on_data, done)
        response.deliverBody(self._body)
        try:
            await self._wait(done)
        finally:
            self._body = None

    async def _error_body(self, response: IResponse) -> str:
        collected = bytearray()

        def on_data(data: bytes) -> bool:
            collected.extend(data)
            return len(collected) >= ERROR_BODY_LIMIT

        try:
            await self._read(response, on_data)
        except ChatError:
            raise
        except Exception:
            pass
        return error_detail(bytes(collected[:ERROR_BODY_LIMIT]))

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle_timeout)
        else:
            self._timer = self._clock.callLater(self._idle_timeout, self._stalled)

    def _stalled(self) -> None:
        self._abort(
            f"{self._provider_name} stream stalled: no data for {self._idle_timeout:g} seconds"
        )

    def _abort(self, reason: str) -> None:
        if self._abort_reason is None:
            self._abort_reason = reason
        if self._body is not None:
            self._body.stop()
        elif self._waiting is not None:
            self._waiting.cancel()

    def _describe(self, error: Exception) -> str:
        if self._abort_reason is not None:
            return self._abort_reason
        name = self._provider_name
        if isinstance(error, ResponseFailed):
            reasons = "; ".join(f.getErrorMessage() for f in error.reasons) or "connection lost"
            return f"{name} connection lost mid-stream: {reasons}"
        if isinstance(error, CancelledError):
            return CANCELLED
        if isinstance(error, ConnectionError | OSError) or type(error).__module__.startswith(
            "twisted.internet.error"
        ):
            return f"{name} is unreachable: {error}"
        self.log.failure("AI stream {id} failed", Failure(error), id=self.id)
        return f"Internal error: {error}"

    def _emit(self, text: str) -> None:
        index = len(self._texts)
        self._texts.append(text)
        self._tell(Delta(index, text))

    def _finish(self, error: str | None, usage: dict[str, int] | None = None) -> None:
        if self.result is not None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.result = Finished(len(self._texts), "".join(self._texts), usage or {}, error)
        self._tell(self.result)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.result)

    def _tell(self, event: AnswerEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                self.log.failure("AI stream {id}: a listener failed", id=self.id)


def error_detail(body: bytes) -> str:
    """
    The message in a provider's error body, or the body itself, shortened.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        value = loads(text)
    except ValueError:
        return text[:300]
    if isinstance(value, dict):
        error = value.get("error", value)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if value.get("message"):
            return str(value["message"])
    return text[:300]


def status_message(provider: str, response: IResponse, detail: str) -> str:
    code = response.code
    suffix = f": {detail}" if detail else ""
    if code in (401, 403):
        return f"{provider} rejected the API key (HTTP {code}){suffix}"
    if code == 429:
        after = response.headers.getRawHeaders(b"retry-after") or []
        wait = f"; retry after {after[0].decode('latin-1')} s" if after else ""
        return f"{provider} rate limit exceeded (HTTP 429){wait}{suffix}"
    if code >= 500:
        return f"{provider} server error (HTTP {code}){suffix}"
    return f"{provider} refused the request (HTTP {code}){suffix}"
