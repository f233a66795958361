"""
Search with progress: ripgrep (or where there is none, the pure-Python
C{cluso_grep}; see L{cluso_router.sources.search.tools}) over the
workspace, results published on the C{search} channel in batches as they
are found.

Progress needs to know how many files were searched, which ripgrep's
C{--json} output does not say (it reports only files with matches). So a
search runs two kinds of process: one lists the files to search (the same
filters: C{.gitignore}, globs, C{--ignore}, blocked names), and, while the
list is still coming in, others search that list in chunks that grow
fourfold (a small first one for a quick first event, large later ones for
fewer processes). Each finished chunk is one progress event; the total is
known when the listing ends.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Final

from pathspec import GitIgnoreSpec
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_grep import BUDGET_SPENT
from cluso_router._process import ChildProcess, LineSplitter, ProcessResult, spawn
from cluso_router._time import iso_timestamp
from cluso_router.router.broadcaster import Burst
from cluso_router.router.procedures import ProcedureError
from cluso_router.sources.context import SourceContext
from cluso_router.sources.lifecycle import SourceService
from cluso_router.sources.search.channel import SEARCH, progress_payload
from cluso_router.sources.search.ripgrep import (
    JsonResults,
    Pattern,
    Result,
    list_files_argv,
    search_argv,
)
from cluso_router.sources.search.routes import (
    SearchResource,
    cancel_operation,
    files_search_operation,
    start_operation,
)
from cluso_router.sources.search.tools import ISearchTool, choose_tool
from cluso_router.workspace.glob import GlobFilter
from cluso_router.workspace.paths import PathRefused, Workspace

DEFAULT_MAX_RESULTS: Final = 1000
MAX_RESULTS_LIMIT: Final = 100_000
MAX_CONTEXT_LINES: Final = 10
#: The first chunk is small so the first progress event comes quickly.
FIRST_CHUNK: Final = 64
LARGEST_CHUNK: Final = 4096
#: Chunks searched at once, so one's process start overlaps another's search.
PARALLEL_CHUNKS: Final = 2
#: Bound on the bytes of file names given to one ripgrep process.
CHUNK_ARGUMENT_BYTES: Final = 256 * 1024
MAX_RUNNING: Final = 8
#: Results found within a chunk are sent once this many are waiting, so
#: dense matches neither delay the first event nor make huge ones.
RESULT_BATCH: Final = 200
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class SearchRequest:
    """
    One validated search: what to look for, where, and how many results
    at most.

    @ivar path: the directory or file searched, relative to the root.
    """

    pattern: Pattern
    globs: tuple[str, ...] = ()
    path: str = "."
    max_results: int = DEFAULT_MAX_RESULTS


@dataclass
class Progress:
    """
    What one progress event reports: files searched so far, the total (once
    the listing has ended) and the results found since the last event.
    """

    search_id: str
    completed: int
    total: int | None
    results: list[Result]
    done: bool = False
    truncated: bool = False
    cancelled: bool = False
    error: str | None = None
    #: Which limit made the search end early: C{maxResults}, or a budget
    #: of the search tool (C{files}, C{bytes}, C{seconds}).
    limit: str | None = None

    def extra(self) -> dict[str, Any]:
        """
        The payload fields beyond the four every C{search} event carries.
        """
        fields: dict[str, Any] = {"done": self.done}
        if self.done:
            fields.update(truncated=self.truncated, cancelled=self.cancelled)
            if self.limit is not None:
                fields["limit"] = self.limit
        if self.error is not None:
            fields["error"] = self.error
        return fields


class Search:
    """
    One running search. L{run} reports L{Progress} to C{on_progress} after
    each chunk and once more, with C{done}, at the end.

    The tool's budget bounds it: past C{files} listed the listing stops
    (the files listed are still searched), past C{bytes} read or
    C{seconds} spent the search stops; the final progress then says
    C{truncated} and which C{limit} was reached.
    """

    log = Logger()

    def __init__(
        self,
        search_id: str,
        request: SearchRequest,
        tool: ISearchTool,
        root: str,
        reactor: Any,
        on_progress: Callable[[Progress], None],
        ignore: tuple[str, ...] = (),
        burst: Burst = nullcontext,
    ) -> None:
        self.search_id = search_id
        self.request = request
        self._tool = tool
        self._budget = tool.budget
        self._root = root
        self._reactor = reactor
        self._on_progress = on_progress
        self._burst = burst
        self._chosen = GlobFilter(request.globs)
        self._ignored = GitIgnoreSpec.from_lines(ignore) if ignore else None
        self._listing: ChildProcess | None = None
        self._timer: IDelayedCall | None = None
        self._bytes = 0
        self._limit: str | None = None
        self._queue: list[bytes] = []
        self._listed = 0
        self._listing_done = False
        self._waiting: Deferred[None] | None = None
        self._chunk_size = FIRST_CHUNK
        self._children: set[ChildProcess] = set()
        self._searching: set[Deferred[None]] = set()
        self._completed = 0
        self._found = 0
        self._pending: list[Result] = []
        self._stopped = False
        self._truncated = False
        self._cancelled = False
        self._error: str | None = None

    async def run(self) -> Progress:
        self._listing = listing = self._spawn(
            list_files_argv(self._tool.command, self.request.path),
            LineSplitter(self._listed_file, separator=b"\0"),
        )
        listing.ended.addCallback(self._listing_ended)
        if self._budget.seconds is not None:
            self._timer = self._reactor.callLater(self._budget.seconds, self._stop, limit="seconds")
        try:
            while not self._stopped:
                chunk = self._next_chunk() if len(self._searching) < PARALLEL_CHUNKS else None
                if chunk:
                    self._search_chunk(chunk)
                elif chunk == [] and not self._searching:
                    break
                else:
                    self._waiting = Deferred()
                    await self._waiting
        except Exception as e:
            self.log.failure("Search {search_id} failed", search_id=self.search_id)
            self._stop(error=f"Internal error: {e}")
        finally:
            self._stop()
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
        await DeferredList(list(self._searching))
        if self._limit is not None:
            self.log.info(
                "Search {search_id} ended early: {limit} limit reached",
                search_id=self.search_id,
                limit=self._limit,
            )
        final = self._progress(done=True)
        self._on_progress(final)
        return final

    def cancel(self) -> bool:
        """
        Stop the search; C{False} when it had already stopped by itself.
        """
        self._cancelled = not self._stopped
        self._stop()
        return self._cancelled

    def _spawn(self, argv: list[str | bytes], splitter: LineSplitter) -> ChildProcess:
        def output(data: bytes) -> None:
            # The progress one read of output gives is published as one burst.
            with self._burst():
                splitter.feed(data)

        child = spawn(self._reactor, argv, self._root, on_output=output)
        self._children.add(child)

        def ended(result: ProcessResult) -> ProcessResult:
            splitter.close()
            self._children.discard(child)
            return result

        child.ended.addCallback(ended)
        return child

    def _listed_file(self, path: bytes) -> None:
        if not path or self._stopped or self._listing_done:
            return
        name = os.fsdecode(path)
        if self._chosen and not self._chosen(name):
            return
        if self._ignored is not None and self._ignored.match_file(name):
            return
        self._queue.append(path)
        self._listed += 1
        if self._budget.files is not None and self._listed >= self._budget.files:
            self._end_listing()
        elif len(self._queue) >= self._chunk_size:
            self._wake()

    def _end_listing(self) -> None:
        """
        Stop listing at the files budget; what was listed is searched.
        """
        self._listing_done = True
        self._limit = "files"
        self._truncated = True
        if self._listing is not None:
            self._listing.kill()
        self._wake()

    def _listing_ended(self, result: ProcessResult) -> None:
        self._listing_done = True
        if result.exit_code == 2 and not self._stopped:
            self.log.warn(
                "Listing files for search {search_id}: {error}",
                search_id=self.search_id,
                error=result.error_text,
            )
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def _next_chunk(self) -> list[bytes] | None:
        """
        The next file names to search: a full chunk, or what is left once
        the listing has ended; C{None} while waiting for more names.
        """
        if len(self._queue) < self._chunk_size and not self._listing_done:
            return None
        count = size = 0
        for path in self._queue[: self._chunk_size]:
            size += len(path) + 1
            if count and size > CHUNK_ARGUMENT_BYTES:
                break
            count += 1
        chunk, self._queue[:count] = self._queue[:count], []
        self._chunk_size = min(self._chunk_size * 4, LARGEST_CHUNK)
        return chunk

    def _search_chunk(self, chunk: list[bytes]) -> None:
        """
        Start searching C{chunk}; once it is done its files count as
        searched, and the loop in L{run} is woken.
        """
        searched = ensureDeferred(self._search(chunk))
        self._searching.add(searched)

        def done(_: None) -> None:
            self._searching.discard(searched)
            if not self._stopped:
                self._completed += len(chunk)
                self._report()
            self._wake()

        def failed(failure: Failure) -> None:
            self._searching.discard(searched)
            self.log.failure("Search {search_id} failed", failure, search_id=self.search_id)
            self._stop(error=f"Internal error: {failure.getErrorMessage()}")

        searched.addCallbacks(done, failed)

    async def _search(self, chunk: list[bytes]) -> None:
        if self._budget.bytes is not None and self._bytes >= self._budget.bytes:
            self._stop(limit="bytes")
            return
        parser = JsonResults(self.request.pattern.context_lines, self._found_results)

        def record(line: bytes) -> None:
            if self._stopped:
                return
            try:
                parser.feed(line)
            except (ValueError, KeyError, TypeError) as e:
                self._stop(error=f"Unreadable ripgrep output: {e!r}")

        bytes_left = None if self._budget.bytes is None else self._budget.bytes - self._bytes
        child = self._spawn(
            search_argv(
                self._tool.command,
                self.request.pattern,
                chunk,
                self.request.max_results,
                self._tool.search_options(bytes_left),
            ),
            LineSplitter(record),
        )
        result = await child.ended
        self._bytes += int(parser.stats.get("bytes_searched", 0))
        if result.exit_code == BUDGET_SPENT and not self._stopped:
            self._completed += int(parser.stats.get("searches", 0))
            self._stop(limit="bytes")
        elif result.exit_code == 2 and not self._stopped:
            self.log.warn(
                "Search {search_id}: {tool} reported: {error}",
                tool=self._tool.name,
                search_id=self.search_id,
                error=result.error_text,
            )

    def _found_results(self, results: list[Result]) -> None:
        room = self.request.max_results - self._found
        self._pending += results[:room]
        self._found += min(room, len(results))
        if len(results) >= room:
            self._stop(limit="maxResults")
        elif len(self._pending) >= RESULT_BATCH:
            self._report()

    def _report(self) -> None:
        self._on_progress(self._progress())

    def _progress(self, done: bool = False) -> Progress:
        results, self._pending = self._pending, []
        return Progress(
            search_id=self.search_id,
            completed=self._completed,
            total=self._listed if self._listing_done else None,
            results=results,
            done=done,
            truncated=self._truncated,
            cancelled=self._cancelled,
            error=self._error,
            limit=self._limit,
        )

    def _stop(self, error: str | None = None, limit: str | None = None) -> None:
        if error is not None and self._error is None:
            self._error = error
        if limit is not None and not self._stopped:
            self._limit = limit
            self._truncated = True
        self._stopped = True
        for child in list(self._children):
            child.kill()
        self._wake()


class SearchService(SourceService):
    """
    Runs searches for clients: C{search.start} / C{search.cancel} publish
    progress on the C{search} channel; C{files.searchInFiles} answers with
    the collected results. The same operations are served over HTTP
    (L{cluso_router.sources.search.routes}).
    """

    log = Logger()

    def __init__(
        self,
        context: SourceContext,
        max_running: int = MAX_RUNNING,
        tool: ISearchTool | None = None,
    ) -> None:
        """
        @param tool: the search program; by default the one the
            C{search-engine} option chooses when the source starts.
        """
        super().__init__(context)
        self._broadcaster = context.broadcaster
        self._workspace = Workspace(context.root)
        self._root = self._workspace.root
        self._reactor = context.reactor
        self._max_running = max_running
        self._running: dict[str, Search] = {}
        #: Searches past the limit check, not yet running.
        self._starting = 0
        self._finished: dict[str, Deferred[Progress]] = {}
        self._tool = tool

    def startSource(self) -> None:
        context = self.context
        if self._tool is None:
            self._tool = choose_tool(str(context.options.get("search-engine", "auto")))
        if self._tool.name == "python":
            self.log.info(
                "No ripgrep found beside Python or on PATH: searching with the "
                "pure-Python engine (slower; each search is limited to {budget})",
                budget=self._tool.budget,
            )
        else:
            self.log.info("Searching with {command}", command=" ".join(self._tool.command))
        context.claim_channel(SEARCH)
        start = start_operation(self.start)
        cancel = cancel_operation(self.cancel)
        context.add_operations([start, cancel, files_search_operation(self.search_in_files)])
        context.mount("/api/search", SearchResource(start, cancel))

    def stopSource(self) -> Deferred[Any]:
        waits = list(self._finished.values())
        for search in list(self._running.values()):
            search.cancel()
        return DeferredList(waits)

    async def start(self, data: Any) -> dict[str, str]:
        """
        The C{search.start} procedure: check the request, start the search
        and answer with its id at once; progress follows as events.
        """
        request = start_request(data)
        search = await self._begin(request, self._publisher(request))
        return {"searchId": search.search_id}

    def cancel(self, data: Any) -> dict[str, Any]:
        """
        The C{search.cancel} procedure: stop a running search; its final
        event says C{cancelled}.
        """
        search_id = data.get("searchId", data.get("id")) if isinstance(data, dict) else data
        search = self._running.get(search_id) if isinstance(search_id, str) else None
        if search is None:
            raise ProcedureError(f"No running search with id {search_id!r}", "no_such_search")
        return {"searchId": search_id, "cancelled": search.cancel()}

    async def search_in_files(
        self, data: Any, progress: Callable[[Any], None] | None = None
    ) -> list[Result]:
        """
        The C{files.searchInFiles} procedure: the same search, answered with
        every result at the end and no events. A caller that takes
        progress gets each step as the payload a C{search} event would
        carry; cancelling the answer cancels the search.
        """
        request = files_search_request(data)
        results: list[Result] = []

        def collect(step: Progress) -> None:
            results.extend(step.results)
            if progress is not None:
                payload = self._payload(request, step)
                progress({**payload, "timestamp": iso_timestamp()})

        search = await self._begin(request, collect)
        final = await self._outcome(search)
        if final.error is not None:
            raise ProcedureError(f"Failed to search files: {final.error}", "search_failed")
        return results

    def _outcome(self, search: Search) -> Deferred[Progress]:
        """
        The final progress of C{search}, in a Deferred whose cancellation
        cancels the search (the search's own Deferred stays untouched for
        L{wait} and L{stopSource}).
        """

        def cancel(_: Deferred[Progress]) -> None:
            search.cancel()

        outcome: Deferred[Progress] = Deferred(cancel)

        def finished(final: Progress) -> Progress:
            if not outcome.called:
                outcome.callback(final)
            return final

        self._finished[search.search_id].addCallback(finished)
        return outcome

    async def wait(self, search_id: str) -> Progress:
        """
        The final progress of a running search.
        """
        return await self._finished[search_id]

    async def _begin(
        self, request: SearchRequest, on_progress: Callable[[Progress], None]
    ) -> Search:
        request = SearchRequest(
            request.pattern,
            request.globs,
            self._confine(request.path),
            request.max_results,
        )
        # The slot is taken before the first await, so searches started
        # together cannot all pass the check and then all run.
        if len(self._running) + self._starting >= self._max_running:
            raise ProcedureError(
                f"Too many searches running (at most {self._max_running}); cancel one first",
                "too_many_searches",
            )
        tool = self._tool
        assert tool is not None, "searches start once the source has started"
        self._starting += 1
        try:
            await self._check(tool, request.pattern)
        finally:
            self._starting -= 1
        search_id = "search-" + secrets.token_hex(8)
        search = Search(
            search_id,
            request,
            tool,
            self._root,
            self._reactor,
            on_progress,
            self.context.ignore,
            burst=self._broadcaster.burst,
        )
        self._running[search_id] = search
        finished = self._finished[search_id] = ensureDeferred(search.run())

        def forget(final: Progress) -> Progress:
            del self._running[search_id]
            del self._finished[search_id]
            return final

        finished.addCallback(forget)
        return search

    async def _check(self, tool: ISearchTool, pattern: Pattern) -> None:
        """
        Refuse a pattern the search tool would refuse, before answering
        with an id. Only a regular expression needs the tool's opinion.
        """
        if not pattern.regex:
            if "\n" in pattern.text:
                raise ProcedureError(
                    "Invalid search pattern: a match lies within one line, "
                    "so the query cannot contain a line break",
                    "invalid_pattern",
                )
            return
        error = await tool.check(self._reactor, self._root, pattern)
        if error is not None:
            raise ProcedureError(error, "invalid_pattern")

    def _confine(self, path: str) -> str:
        """
        C{path} as a root-relative path, if the workspace rules allow it and
        it exists.
        """
        try:
            target = self._workspace.resolve(path)
        except PathRefused as e:
            raise ProcedureError(e.message, "path_refused") from None
        if not os.path.exists(target.path):
            raise ProcedureError(f"No such file or directory: {path}", "not_found")
        return target.relative

    def _publisher(self, request: SearchRequest) -> Callable[[Progress], None]:
        def publish(progress: Progress) -> None:
            self._broadcaster.emit_stamped(SEARCH.channel, self._payload(request, progress))

        return publish

    @staticmethod
    def _payload(request: SearchRequest, progress: Progress) -> dict[str, Any]:
        return progress_payload(
            request.pattern.text,
            progress.completed,
            progress.total,
            progress.results,
            searchId=progress.search_id,
            **progress.extra(),
        )


def make_source(context: SourceContext) -> SearchService:
    return SearchService(context)


def start_request(data: Any) -> SearchRequest:
    """
    The body of C{search.start} and C{POST /api/search}:
    C{{query, regex?, caseSensitive?, glob?, maxResults?, path?, contextLines?}}.
    """
    fields = _object(data)
    return SearchRequest(
        Pattern(
            _text(fields, "query"),
            regex=_flag(fields, "regex", False),
            case_sensitive=_flag(fields, "caseSensitive", False),
            context_lines=_count(fields, "contextLines", 0, MAX_CONTEXT_LINES),
        ),
        globs=_globs(fields.get("glob")),
        path=_path(fields, "path"),
        max_results=_count(fields, "maxResults", DEFAULT_MAX_RESULTS, MAX_RESULTS_LIMIT, 1),
    )


def files_search_request(data: Any) -> SearchRequest:
    """
    The body of C{POST /api/files/search} (C{{pattern, glob?, limit?,
    contextLines?}}) and the arguments of C{files.searchInFiles}: a bare
    pattern, C{[pattern, dirPath?, options?]} or C{{pattern, dirPath?,
    options?}} with options C{filePattern}, C{maxResults}, C{caseSensitive}.
    The pattern is a regular expression, case-sensitive unless told.
    """
    if isinstance(data, str):
        data = {"pattern": data}
    elif isinstance(data, list):
        data = dict(zip(("pattern", "dirPath", "options"), data, strict=False))
    fields = _object(data)
    options = fields.get("options") or {}
    if not isinstance(options, dict):
        raise ProcedureError("Invalid request: options must be an object", "invalid_request")
    merged = {**fields, **options}
    limit = "limit" if "limit" in merged else "maxResults"
    return SearchRequest(
        Pattern(
            _text(merged, "pattern"),
            regex=True,
            case_sensitive=_flag(merged, "caseSensitive", True),
            context_lines=_count(merged, "contextLines", 2, MAX_CONTEXT_LINES),
        ),
        globs=_globs(merged.get("glob", merged.get("filePattern"))),
        path=_path(merged, "dirPath" if "dirPath" in merged else "path"),
        max_results=_count(merged, limit, DEFAULT_MAX_RESULTS, MAX_RESULTS_LIMIT, 1),
    )


def _invalid(message: str) -> ProcedureError:
    return ProcedureError(f"Invalid request: {message}", "invalid_request")


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _invalid("expected an object")
    return data


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise ProcedureError(f"Missing required field: {name}", "invalid_request")
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    if "\0" in value or _SURROGATE.search(value):
        raise _invalid(f"{name} must be Unicode text without NUL characters")
    return value


def _flag(fields: dict[str, Any], name: str, default: bool) -> bool:
    value = fields.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be true or false")
    return value


def _count(fields: dict[str, Any], name: str, default: int, largest: int, least: int = 0) -> int:
    value = fields.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= largest:
        raise _invalid(f"{name} must be a whole number from {least} to {largest}")
    return value


def _globs(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [value]
    if not (isinstance(value, list) and all(isinstance(g, str) and g for g in value)):
        raise _invalid("glob must be a glob string or a list of them")
    try:
        GlobFilter(value)
    except ValueError as e:
        raise _invalid(f"bad glob: {e}") from None
    return tuple(value)


def _path(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name) or "."
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    return value
