"""
What an event source is given by the server it runs in, and how it adds
channels, procedures and HTTP routes that go away again when it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource

from cluso_router.router.broadcaster import Broadcaster
from cluso_router.router.channels import ChannelClaim, ChannelSpec
from cluso_router.router.conflation import KeyFunction
from cluso_router.router.router import Router
from cluso_router.web.routes import Operation, mount, mount_resource, unmount
from cluso_router.workspace.ledger import FileChangeLedger


@dataclass
class SourceContext:
    """
    Everything a source needs from the server, and the one way it adds to
    the server: L{claim_channel}, L{provide}, L{add_operations} and
    L{mount}. All of it is withdrawn with L{withdraw}, which the server calls
    when the source stops, so a stopped source leaves nothing behind.
    Built-in and third-party sources get the same context.

    @ivar name: the source's name; its claims are made in that name.
    @ivar options: the values of this source's own options, by long name.
    @ivar ignore: C{.gitignore}-style patterns given with C{--ignore}, for
        sources that walk the workspace.
    @ivar web_root: the root resource of the server's site; C{None} when
        the source runs without one (then L{mount} and L{add_operations}
        only register procedures).
    """

    router: Router
    broadcaster: Broadcaster
    file_changes: FileChangeLedger
    root: str
    reactor: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    web_root: Resource | None = None
    name: str = "embedded"
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    log = Logger()

    def for_source(self, name: str, options: Mapping[str, Any]) -> SourceContext:
        """
        A context of its own for source C{name} with C{options}; what it
        adds is withdrawn apart from every other source's.
        """
        return replace(self, name=name, options=options, _undo=[])

    def claim_channel(
        self,
        channel: str | ChannelSpec,
        description: str = "",
        conflate: KeyFunction | None = None,
        schema: Mapping[str, Any] | None = None,
        examples: Sequence[Any] = (),
    ) -> ChannelClaim:
        """
        Claim a channel this source publishes on: clients may no longer
        C{send} on it, its events conflate by C{conflate}, and the AsyncAPI
        document describes it with C{description} and C{schema}. Give a
        L{ChannelSpec} or its fields.

        @raise cluso_router.router.channels.ChannelTaken: another part
            claimed it with another conflation key.
        """
        spec = (
            channel
            if isinstance(channel, ChannelSpec)
            else ChannelSpec(channel, description, conflate, schema, tuple(examples))
        )
        claim = self.router.claims.claim(spec, self.name)
        self._undo.append(lambda: self.router.claims.release(claim))
        return claim

    def provide(self, procedure: str, call: Callable[..., Any]) -> None:
        """
        Make C{call} callable by clients as C{procedure} (C{invoke}, WAMP
        calls); see L{cluso_router.router.procedures.ProcedureRegistry}.
        """
        self.router.register(procedure, call)
        self._undo.append(lambda: self.router.procedures.unregister(procedure))

    def add_operations(self, operations: Sequence[Operation]) -> None:
        """
        Serve each operation at its HTTP paths, as its procedure and as an
        MCP tool, from the one declaration (see L{cluso_router.web.routes}).
        """
        for operation in operations:
            if self.web_root is not None:
                root = self.web_root
                mount(root, operation)
                self._undo.append(lambda root=root, op=operation: unmount(root, op))  # type: ignore[misc]
            if operation.procedure is not None:
                self.provide(operation.procedure, operation.procedure_callable())

    def mount(self, path: str, resource: Resource) -> None:
        """
        Serve C{resource} at C{path} (such as C{/api/ai}) of the site.
        """
        if self.web_root is not None:
            self._undo.append(mount_resource(self.web_root, path, resource))

    def withdraw(self) -> None:
        """
        Take back every claim, procedure and route added through this
        context, newest first; idempotent.
        """
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:
                self.log.failure("Withdrawing part of source {source} failed", source=self.name)
