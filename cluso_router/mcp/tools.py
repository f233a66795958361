"""
The tools an MCP client sees: every operation the server serves right now
(files, git, search, validation, diagnostics, whatever a source added), and
every procedure that has no declaration (one a WAMP client registered, a
source's own), for as long as it is there.

An operation's tool has its input and output schemas, annotations (a tool
that changes nothing is read-only) and progress from its declaration; a
failure is a tool error with the message the HTTP API answers with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._json import JSONError, dumps
from cluso_router.mcp.protocol import TOOL_NAME
from cluso_router.mcp.schemas import RESULT, input_schema, output_schema, wraps_result
from cluso_router.router.observers import Observers
from cluso_router.router.procedures import await_result
from cluso_router.router.router import Router
from cluso_router.web.resources import failure_answer
from cluso_router.web.routes import Operation, OperationTable, ProgressMeter

#: Reports progress to the client: how far, of how much, and a line.
Report = Callable[[float, float | None, str], None]
#: Runs a tool: its arguments and, when the caller takes progress, what
#: gets each progress value.
Runner = Callable[[Mapping[str, Any], Callable[[Any], None] | None], Any]

PROCEDURE_INPUT: Final = {
    "type": "object",
    "properties": {
        "data": {"description": "The value an invoke of this procedure sends as its data"}
    },
}
#: Longest progress line made from a progress value without a meter.
_LINE: Final = 200


@dataclass(frozen=True)
class Tool:
    """
    One tool: what C{tools/list} says of it and how to run it.

    @ivar wrap: its result is not an object, so it goes under C{result}.
    """

    descriptor: Mapping[str, Any]
    run: Runner
    meter: ProgressMeter | None = None
    wrap: bool = True

    @property
    def name(self) -> str:
        return str(self.descriptor["name"])


def operation_tool(operation: Operation) -> Tool:
    descriptor: dict[str, Any] = {
        "name": operation.name,
        "title": operation.summary,
        "description": _description(operation),
        "inputSchema": input_schema(operation),
        "annotations": {
            "readOnlyHint": not operation.mutates,
            "destructiveHint": bool(operation.mutates),
        },
    }
    output = output_schema(operation)
    if output is not None:
        descriptor["outputSchema"] = output
    return Tool(
        descriptor,
        lambda arguments, progress: operation(arguments, progress),
        operation.progress,
        wraps_result(operation),
    )


def _description(operation: Operation) -> str:
    routes = ", ".join(f"{operation.method} {path}" for path in operation.paths)
    where = f" (HTTP: {routes})" if routes else ""
    return f"{operation.summary}{where}."


def procedure_tool(router: Router, name: str) -> Tool:
    """
    A procedure without a declaration: its one argument is C{data}.
    """

    def run(arguments: Mapping[str, Any], progress: Callable[[Any], None] | None) -> Any:
        return router.call(name, arguments.get("data"), progress)

    return Tool(
        {
            "name": name,
            "description": f"The procedure {name}, callable with invoke; it declares no "
            "schema, so data is passed through as given.",
            "inputSchema": PROCEDURE_INPUT,
            "annotations": {"readOnlyHint": False, "destructiveHint": True},
        },
        run,
    )


class ToolCatalog:
    """
    The tools of one server, made when asked from its operation table and
    its router's procedures.

    @ivar changes: told once per reactor turn in which tools came or went.
    """

    log = Logger()

    def __init__(self, table: OperationTable, router: Router, clock: IReactorTime) -> None:
        self._table = table
        self._router = router
        self._clock = clock
        self._announcing: IDelayedCall | None = None
        self.changes = Observers()
        table.changes.add(self._changed)
        router.procedures.changes.add(self._changed)

    def close(self) -> None:
        self._table.changes.remove(self._changed)
        self._router.procedures.changes.remove(self._changed)
        if self._announcing is not None and self._announcing.active():
            self._announcing.cancel()

    def _changed(self) -> None:
        if self._announcing is None or not self._announcing.active():
            self._announcing = self._clock.callLater(0, self.changes.notify)

    def tools(self) -> list[Tool]:
        """
        Every tool, by name; names the protocol does not allow are left out.
        """
        tools: dict[str, Tool] = {}
        for operation in self._table:
            tools.setdefault(operation.name, operation_tool(operation))
        for name in self._router.procedures.names():
            if name not in tools:
                tools[name] = procedure_tool(self._router, name)
        return [tools[name] for name in sorted(tools) if TOOL_NAME.fullmatch(name)]

    def find(self, name: str) -> Tool | None:
        operation = self._table.named(name)
        if operation is not None:
            return operation_tool(operation)
        if TOOL_NAME.fullmatch(name) and name in self._router.procedures.names():
            return procedure_tool(self._router, name)
        return None

    def call(
        self, tool: Tool, arguments: Mapping[str, Any], report: Report | None
    ) -> Deferred[dict[str, Any]]:
        """
        Run C{tool}: a result, or a tool error (C{isError}) saying what the
        HTTP API would. Progress values are measured and reported while
        they increase. Cancelling the answer cancels the work.
        """
        progress = None if report is None else _progress(tool, report)
        running = maybeDeferred(tool.run, arguments, progress).addCallback(await_result)
        return running.addCallbacks(lambda value: _succeeded(tool, value), _failed, (), {}, (tool,))


def _progress(tool: Tool, report: Report) -> Callable[[Any], None]:
    count = 0
    last: float | None = None

    def progress(value: Any) -> None:
        nonlocal count, last
        count += 1
        try:
            done, total, line = (
                tool.meter(value, count) if tool.meter is not None else _count(value, count)
            )
        except (KeyError, TypeError, ValueError):
            ToolCatalog.log.failure("Measuring progress of {tool} failed", tool=tool.name)
            return
        if last is None or done > last:
            last = done
            report(done, total, line)

    return progress


def _count(value: Any, count: int) -> tuple[float, float | None, str]:
    """
    The progress of a tool without a meter: each value is one step.
    """
    try:
        line = dumps(value).decode("utf-8")
    except JSONError:
        line = ""
    return count, None, line[:_LINE]


def _succeeded(tool: Tool, value: Any) -> dict[str, Any]:
    try:
        text = dumps(value).decode("utf-8")
    except JSONError:
        return tool_error("Internal error: result is not JSON")
    structured = {RESULT: value} if tool.wrap or not isinstance(value, dict) else value
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": False,
    }


def _failed(failure: Failure, tool: Tool) -> dict[str, Any] | Failure:
    if failure.check(CancelledError):
        return failure
    _, message = failure_answer(failure, f"Tool {tool.name}")
    return tool_error(message)


def tool_error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}
