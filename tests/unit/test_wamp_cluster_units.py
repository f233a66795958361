"""
WAMP registrations and calls between nodes without Redis: two clusters
wired by an in-memory stand-in of the backplane's control messages, on a
fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.wamp import message
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluso_router.router.router import Router
from cluso_router.ws.wamp.cluster import HEARTBEAT, NODE_TIMEOUT, WampCluster
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.rpc import SessionRPC
from cluso_router.ws.wamp.serializers import JSON
from cluso_router.ws.wamp.session import WampSession
from cluso_router.ws.wamp.wire import WEBSOCKET, wire


class Wiring:
    """
    The control channel between the fake nodes: what is sent reaches the
    target (or every node) once L{deliver} runs.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, FakeBackplane] = {}
        self.pending: list[tuple[str | None, str]] = []
        self.cut: set[str] = set()

    def deliver(self) -> None:
        while self.pending:
            node, body = self.pending.pop(0)
            for name, backplane in self.nodes.items():
                wanted = (node is None or node == name) and name not in self.cut
                if wanted and backplane.control is not None:
                    backplane.control(body)


class FakeBackplane:
    def __init__(self, wiring: Wiring, node: str, clock: Clock) -> None:
        self.node_id = node
        self.clock = clock
        self.connected = True
        self.control: Any = None
        self._wiring = wiring
        wiring.nodes[node] = self

    def send_control(self, body: str, node: str | None = None) -> Any:
        if self.node_id not in self._wiring.cut:
            self._wiring.pending.append((node, body))
        return succeed(None)


class Connection:
    def sendPing(self, payload: bytes | None = None) -> None:
        pass

    def sendCloseFrame(
        self, code: Any = None, reasonUtf8: Any = None, isReply: Any = False
    ) -> None:
        pass

    def dropConnection(self, abort: bool = False) -> None:
        pass


class Peer:
    def __init__(self, realm: WampRealm) -> None:
        self.sent: list[Any] = []
        self.session = WampSession(Connection(), StringTransport(), wire(JSON, WEBSOCKET).encoder)
        self.session.roles = {"callee": {"features": {"call_canceling": True}}}
        realm.join(self.session)
        self.rpc = SessionRPC(self.session, realm, self.record, max_registrations=8)

        class Handler:
            rpc = self.rpc

        self.session.peer = Handler()  # type: ignore[assignment]

    def record(self, msg: Any) -> None:
        self.sent.append(msg if isinstance(msg, list) else msg.marshal())


@pytest.fixture
def cluster() -> Any:
    clock = Clock()
    wiring = Wiring()
    realms = {}
    for name in ("a", "b"):
        router = Router(clock=clock)
        realm = WampRealm(router)
        WampCluster(realm, FakeBackplane(wiring, name, clock), clock).startService()  # type: ignore[arg-type]
        realms[name] = realm
    wiring.deliver()
    return clock, wiring, realms


def test_a_call_reaches_a_callee_on_another_node(cluster: Any) -> None:
    """
    A registration on node B is known on node A; a call there is invoked
    on B and its progress and result come back.
    """
    _, wiring, realms = cluster
    callee, caller = Peer(realms["b"]), Peer(realms["a"])
    callee.rpc.register(message.Register(1, "remote.proc"), {})
    wiring.deliver()

    caller.rpc.call(message.Call(7, "remote.proc", args=[1], receive_progress=True), {})
    wiring.deliver()
    invocation = callee.sent[-1]
    callee.rpc.yield_(message.Yield(invocation[1], args=["half"], progress=True), {})
    callee.rpc.yield_(message.Yield(invocation[1], args=["done"], kwargs={"k": b"\x01"}), {})
    wiring.deliver()

    assert invocation[0] == 68
    assert invocation[3] == {"receive_progress": True}
    assert invocation[4] == [1]
    assert caller.sent == [
        [50, 7, {"progress": True}, ["half"]],
        [50, 7, {}, ["done"], {"k": b"\x01"}],
    ]


def test_a_silent_node_is_forgotten(cluster: Any) -> None:
    """
    A node not heard from for L{NODE_TIMEOUT} seconds loses its callees on
    the other nodes, and the calls waiting on them fail.
    """
    clock, wiring, realms = cluster
    callee, caller = Peer(realms["b"]), Peer(realms["a"])
    callee.rpc.register(message.Register(1, "remote.proc"), {})
    wiring.deliver()
    caller.rpc.call(message.Call(7, "remote.proc"), {})
    wiring.deliver()

    wiring.cut.add("b")
    for _ in range(int(NODE_TIMEOUT / HEARTBEAT) + 2):
        clock.advance(HEARTBEAT)
        wiring.deliver()

    assert caller.sent == [[8, 48, 7, {}, "cluso.error.callee_lost", ["the callee went away"]]]
    assert realms["a"].dealer.best("remote.proc") is None


def test_unregistering_reaches_the_other_node(cluster: Any) -> None:
    """
    When the callee unregisters (or leaves), the other node forgets it.
    """
    _, wiring, realms = cluster
    callee = Peer(realms["b"])
    callee.rpc.register(message.Register(1, "remote.proc"), {})
    wiring.deliver()
    known = realms["a"].dealer.best("remote.proc") is not None

    callee.rpc.leave()
    wiring.deliver()

    assert known
    assert realms["a"].dealer.best("remote.proc") is None
