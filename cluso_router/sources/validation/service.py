"""
Validation: running the workspace's linters and type checkers on request
or after file changes, each finished run published on the C{validation}
channel as C{validation_complete}.

Each tool has at most one run in progress and at most one waiting: asking
again while one waits joins the waiting run, so a burst of changes costs
one extra run, not one per change. A tool that is missing, crashes, prints
something unreadable or outlives its timeout gives a failed result saying
so, never a hang.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._process import ChildProcess, ExecutableNotFound, find_executable, spawn
from cluso_router._time import iso_timestamp
from cluso_router.router.procedures import ProcedureError
from cluso_router.sources.context import SourceContext
from cluso_router.sources.lifecycle import SourceService
from cluso_router.sources.validation.channel import VALIDATION, validation_complete
from cluso_router.sources.validation.routes import validate_operation
from cluso_router.sources.validation.validators import (
    CONFIG_FILES,
    DEFAULT_DEBOUNCE,
    PARSERS,
    ConfigError,
    OutputError,
    ServerTools,
    ValidationConfig,
    Validator,
    load,
    load_server_config,
)
from cluso_router.workspace.glob import GlobFilter
from cluso_router.workspace.ledger import FileEvent

Result = dict[str, Any]
PROCEDURE: Final = "validation.run"


class ToolQueue:
    """
    Runs one tool: at most one run in progress and one waiting; every
    request is answered with the result of the run that covers it.
    """

    def __init__(self, run: Callable[[Validator], Deferred[Result]]) -> None:
        self._run = run
        self._current: list[Deferred[Result]] | None = None
        self._next: tuple[Validator, list[Deferred[Result]]] | None = None

    @property
    def running(self) -> bool:
        return self._current is not None

    @property
    def pending(self) -> bool:
        return self._next is not None

    def request(self, validator: Validator) -> Deferred[Result]:
        """
        Ask for a run of C{validator} that starts no earlier than now.
        """
        waiter: Deferred[Result] = Deferred()
        if self._current is None:
            self._start(validator, [waiter])
        elif self._next is None:
            self._next = (validator, [waiter])
        else:
            self._next = (validator, [*self._next[1], waiter])
        return waiter

    def _start(self, validator: Validator, waiters: list[Deferred[Result]]) -> None:
        self._current = waiters
        self._run(validator).addBoth(self._finished)

    def _finished(self, outcome: Result | Failure) -> None:
        waiters, self._current = self._current or [], None
        if self._next is not None:
            (validator, following), self._next = self._next, None
            self._start(validator, following)
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)


class ValidationService(SourceService):
    """
    The C{validation.run} procedure (and C{POST /api/validate}) and, with
    C{on_change}, runs after the files that concern each tool change
    (debounced).
    """

    log = Logger()

    def __init__(
        self,
        context: SourceContext,
        on_change: bool | None = None,
        clock: IReactorTime | None = None,
        config_file: str | None = None,
    ) -> None:
        """
        @param config_file: the server's validation configuration (tools
            with their commands); default the source's C{config} option
            (C{--validation-config}).
        """
        super().__init__(context)
        self._broadcaster = context.broadcaster
        self._file_changes = context.file_changes
        self._root = os.path.realpath(context.root)
        self._reactor = context.reactor
        self._clock: IReactorTime = clock if clock is not None else context.reactor
        if on_change is None:
            on_change = bool(context.options.get("on-change", False))
        self._config_file = config_file or context.options.get("config") or None
        self._server = ServerTools()
        self.on_change = on_change
        self._queues: dict[str, ToolQueue] = {}
        self._children: set[ChildProcess] = set()
        self._changed: set[str] = set()
        self._debounce_call: IDelayedCall | None = None
        self._debounce = DEFAULT_DEBOUNCE

    def startSource(self) -> None:
        try:
            load_server_config(self._config_file, self._root)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        self.context.claim_channel(VALIDATION)
        self.context.add_operations([validate_operation(self.run)])
        if self.on_change:
            self._debounce = self._config_or_default().debounce
            self._file_changes.add_observer(self._file_changed)

    def stopSource(self) -> Deferred[Any]:
        self._file_changes.remove_observer(self._file_changed)
        if self._debounce_call is not None and self._debounce_call.active():
            self._debounce_call.cancel()
        ended = [child.ended for child in self._children]
        for child in list(self._children):
            child.kill()
        return DeferredList(ended)

    def queue(self, name: str) -> ToolQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = ToolQueue(
                lambda validator: ensureDeferred(self._execute(validator))
            )
        return queue

    async def run(
        self, data: Any = None, progress: Callable[[Any], None] | None = None
    ) -> list[Result]:
        """
        The C{validation.run} procedure: run every validator, or the one
        named by C{{tool}} (or a bare name), and answer with their results.
        A caller that takes progress gets each validator's result as it
        finishes, as the payload of its C{validation} event. Cancelling the
        answer stops waiting; the runs finish for whoever else waits on
        them, within their timeouts.
        """
        tool = data.get("tool") if isinstance(data, dict) else data
        if tool is not None and not isinstance(tool, str):
            raise ProcedureError("Invalid request: tool must be a string", "invalid_request")
        try:
            config = self._load()
        except ConfigError as e:
            raise ProcedureError(f"Invalid validation configuration: {e}", "bad_config") from None
        validators = list(config.validators)
        if tool:
            validators = [v for v in validators if v.name == tool]
            if not validators:
                names = ", ".join(v.name for v in config.validators) or "none"
                raise ProcedureError(
                    f"No validator named {tool!r} (available: {names})", "no_such_validator"
                )
        if not validators:
            raise ProcedureError(
                "No validators: none configured in cluso.toml or pyproject.toml "
                "[tool.cluso.validation], and none detected",
                "no_validators",
            )
        waits = [self.queue(v.name).request(v) for v in validators]
        if progress is not None:
            for wait in waits:
                wait.addCallback(self._report, progress)
        results: list[Result] = await gatherResults(waits, consumeErrors=True)
        return results

    @staticmethod
    def _report(result: Result, progress: Callable[[Any], None]) -> Result:
        progress({"validation": result, "timestamp": iso_timestamp()})
        return result

    def _load(self) -> ValidationConfig:
        """
        The validators now: both files are read for every run, so edits
        apply without a restart.
        """
        self._server = load_server_config(self._config_file, self._root)
        return load(self._root, self._server)

    def _config_or_default(self) -> ValidationConfig:
        try:
            return self._load()
        except ConfigError as e:
            self.log.error("Validation configuration: {error}", error=str(e))
            return ValidationConfig(())

    def _file_changed(self, path: str, event: FileEvent) -> None:
        self._changed.add(path)
        if self._debounce_call is not None and self._debounce_call.active():
            self._debounce_call.reset(self._debounce)
        else:
            self._debounce_call = self._clock.callLater(self._debounce, self._changes_settled)

    def _changes_settled(self) -> None:
        changed, self._changed = self._changed, set()
        config = self._config_or_default()
        self._debounce = config.debounce
        for validator in concerned(config.validators, changed):
            self.queue(validator.name).request(validator).addErrback(
                lambda failure: self.log.failure("Validation run failed", failure)
            )

    def _tool_directories(self) -> list[str]:
        """
        Where a tool named without a path is looked for before C{PATH}: the
        project's C{node_modules/.bin} (clients cannot write there: the
        files API refuses C{node_modules}), the directories of the server's
        configuration, then this server's environment. Never a virtualenv
        inside the root, which the files API could fill with programs.
        """
        return [
            os.path.join(self._root, "node_modules", ".bin"),
            *self._server.path,
            os.path.dirname(sys.executable),
        ]

    async def _execute(self, validator: Validator) -> Result:
        started = self._clock.seconds()
        result = await self._outcome(validator)
        result["durationMs"] = round((self._clock.seconds() - started) * 1000)
        validation_complete(self._broadcaster, result)
        return result

    async def _outcome(self, validator: Validator) -> Result:
        name = validator.name
        try:
            executable = find_executable(validator.command[0], self._tool_directories())
        except ExecutableNotFound as e:
            result = failed(
                validator,
                f"{e.name} is not installed (not found on PATH, in the project's "
                "node_modules/.bin, the --validation-config path, or beside this "
                "server's Python)",
            )
            if validator.install:
                result["install"] = validator.install
            return result
        child = spawn(self._reactor, [executable, *validator.command[1:]], self._root)
        self._children.add(child)
        timed_out: list[bool] = []

        def stop() -> None:
            timed_out.append(True)
            child.kill()

        timer = self._clock.callLater(validator.timeout, stop)
        try:
            ended = await child.ended
        finally:
            self._children.discard(child)
            if timer.active():
                timer.cancel()
        if timed_out:
            return failed(validator, f"{name} did not finish within {validator.timeout:g} s")
        if ended.exit_code is None:
            return failed(validator, f"{name} was killed by signal {ended.signal}")
        try:
            passed, errors = PARSERS[validator.parser](
                ended.exit_code,
                ended.stdout.decode("utf-8", "replace"),
                ended.stderr.decode("utf-8", "replace"),
                self._root,
            )
        except OutputError as e:
            return failed(validator, f"{name} {e}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return failed(validator, f"{name} printed output that could not be read: {e!r}")
        return {
            "tool": name,
            "type": validator.type,
            "passed": passed,
            "errors": errors,
        }


def failed(validator: Validator, problem: str) -> Result:
    """
    The result of a run that could not check anything: not passed, no
    errors found, and C{error} saying why.
    """
    return {
        "tool": validator.name,
        "type": validator.type,
        "passed": False,
        "errors": [],
        "error": problem,
    }


def concerned(validators: Iterable[Validator], changed: set[str]) -> list[Validator]:
    """
    The validators one of the C{changed} paths concerns: any change for a
    validator without triggers, and every validator when a configuration
    file changed.
    """
    if changed & set(CONFIG_FILES):
        return list(validators)
    chosen = []
    for validator in validators:
        triggers = GlobFilter(validator.triggers)
        if not triggers or any(triggers(path) for path in changed):
            chosen.append(validator)
    return chosen


def make_source(context: SourceContext) -> ValidationService:
    return ValidationService(context)
