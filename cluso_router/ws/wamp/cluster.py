"""
WAMP registrations and calls across the nodes of one deployment, carried
by the Redis backplane's control messages (JSON, WAMP's binary strings for
binary values).

Each node tells every node of its callees registering and unregistering,
and the others enter those callees in their dealers as remote callees, so
a call (or a JSON-dialect invoke) on any node reaches the best matching
registration of the deployment, under its invocation policy over all its
callees. A call to a remote callee travels to that callee's node, which
invokes it and sends the answers (progressive ones too), and takes
INTERRUPTs, back; the caller's node keeps the call's timeout.

A node says it is alive every L{HEARTBEAT} seconds; a node not heard from
for L{NODE_TIMEOUT} seconds (or that said goodbye) is forgotten: its
callees leave every registration and the calls waiting on them fail with
C{cluso.error.callee_lost}. A node that (re)connects to Redis asks the
others to tell it their registrations again.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluso_router._json import JSONError, dumps, loads
from cluso_router.backplane.redis import RedisBackplane
from cluso_router.router.subscriptions import Match
from cluso_router.ws.wamp.dealer import Call, Callee, DealerError, Payload, Registration, text
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.rpc import SessionRPC

#: Seconds between a node's heartbeats.
HEARTBEAT: Final = 2.0
#: Seconds after which a silent node is forgotten.
NODE_TIMEOUT: Final = 10.0


@dataclass
class RemoteSession:
    """
    A session of another node, as far as this node needs to know it.
    """

    wamp_id: int | None
    authid: str | None
    authrole: str | None
    features: Mapping[str, Any] = field(default_factory=dict)

    def supports(self, role: str, feature: str) -> bool:
        return self.features.get(feature) is True


class RemoteCallee:
    """
    A callee of another node; calls to it travel as control messages.
    """

    def __init__(self, cluster: WampCluster, node: str, session: RemoteSession) -> None:
        self.cluster = cluster
        self.node = node
        self._session = session
        #: Its registrations here, by (uri, match).
        self.registrations: dict[tuple[str, str], Registration] = {}

    @property
    def session(self) -> RemoteSession:
        return self._session

    def invoke(self, call: Call, registration: Registration) -> None:
        self.cluster.send_call(self, call, registration)

    def interrupt(self, call: Call, mode: str) -> None:
        self.cluster.send_interrupt(self, call, mode)

    def revoke(self, registration: Registration, reason: str) -> None:
        self.registrations.pop((registration.pattern, registration.match), None)
        self.cluster.send(
            {
                "t": "revoke",
                "s": self._session.wamp_id,
                "u": registration.pattern,
                "m": registration.match,
                "e": reason,
            },
            self.node,
        )


@dataclass
class _Node:
    seen: float
    callees: dict[int, RemoteCallee] = field(default_factory=dict)
    #: Calls sent to its callees, by key.
    calls: dict[str, Call] = field(default_factory=dict)


class _RemoteReply:
    """
    Answers to a call from another node, sent back to it.
    """

    def __init__(self, cluster: WampCluster, node: str, key: str) -> None:
        self._cluster = cluster
        self._node = node
        self._key = key

    def progress(self, answer: Payload) -> None:
        self._cluster.send({"t": "res", "k": self._key, "x": _payload(answer), "p": 1}, self._node)

    def result(self, answer: Payload) -> None:
        self._cluster.serving.pop(self._key, None)
        self._cluster.send({"t": "res", "k": self._key, "x": _payload(answer)}, self._node)

    def error(self, uri: str, answer: Payload) -> None:
        self._cluster.serving.pop(self._key, None)
        self._cluster.send(
            {"t": "err", "k": self._key, "e": uri, "x": _payload(answer)}, self._node
        )


def _payload(payload: Payload) -> dict[str, Any]:
    fields: dict[str, Any] = {"a": payload.args}
    if payload.kwargs:
        fields["k"] = payload.kwargs
    if payload.raw is not None:
        fields["r"] = payload.raw
    if payload.options:
        fields["o"] = dict(payload.options)
    return fields


def _unpayload(fields: Mapping[str, Any]) -> Payload:
    return Payload(
        list(fields.get("a") or []), fields.get("k") or None, fields.get("r"), fields.get("o") or {}
    )


class WampCluster(Service):
    """
    This node's part in the deployment's WAMP registrations and calls.
    """

    log = Logger()
    name = "wamp-cluster"

    def __init__(
        self, realm: WampRealm, backplane: RedisBackplane, clock: IReactorTime | None = None
    ) -> None:
        self._realm = realm
        self._dealer = realm.dealer
        self._backplane = backplane
        self._clock: IReactorTime = clock if clock is not None else backplane.clock
        self.node = backplane.node_id
        self._nodes: dict[str, _Node] = {}
        #: Calls from other nodes this node's callees are working on.
        self.serving: dict[str, tuple[Call, SessionRPC]] = {}
        self._announced = False
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self._clock
        self._handlers = {
            "hello": self._on_hello,
            "alive": self._on_alive,
            "bye": self._on_bye,
            "reg": self._on_register,
            "unreg": self._on_unregister,
            "revoke": self._on_revoke,
            "call": self._on_call,
            "int": self._on_interrupt,
            "res": self._on_result,
            "err": self._on_error,
        }

    # service

    def startService(self) -> None:
        super().startService()
        self._backplane.control = self.received
        self._dealer.observer = self
        self._heartbeat.start(HEARTBEAT, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        self.send({"t": "bye"})
        self._dealer.observer = None
        self._backplane.control = None

    def _beat(self) -> None:
        """
        Say this node is alive (after (re)connecting, ask the others for
        their registrations and tell them ours) and forget silent nodes.
        """
        if not self._backplane.connected:
            self._announced = False
            return
        if not self._announced:
            self._announced = True
            self.send({"t": "hello"})
            self._announce()
        self.send({"t": "alive"})
        horizon = self._clock.seconds() - NODE_TIMEOUT
        for node, state in list(self._nodes.items()):
            if state.seen < horizon:
                self.log.warn("WAMP node {node} went silent; forgetting its callees", node=node)
                self._forget(node)

    # sending

    def send(self, message: dict[str, Any], node: str | None = None) -> None:
        """
        Send C{message} to C{node}, or to every node; one that cannot go
        (Redis unreachable) is logged.
        """
        try:
            body = dumps({**message, "n": self.node}, binary=True).decode("utf-8")
        except JSONError as e:
            self.log.warn("A WAMP control message could not be encoded: {error}", error=e)
            return
        self._backplane.send_control(body, node).addErrback(self._not_sent)

    def _not_sent(self, failure: Failure) -> None:
        # A node stopping closes its Redis connection right after its
        # "bye", before Redis answers: nothing to report then.
        if self.running:
            self.log.warn(
                "A WAMP control message was not sent: {reason}",
                reason=failure.getErrorMessage(),
            )

    def _announce(self, node: str | None = None) -> None:
        for registration in list(self._dealer.registrations.values()):
            for callee in registration.callees:
                if isinstance(callee, SessionRPC):
                    self._send_registration("reg", callee, registration, node)

    def _send_registration(
        self, kind: str, callee: SessionRPC, registration: Registration, node: str | None = None
    ) -> None:
        session = callee.session
        features = session.roles.get("callee", {})
        self.send(
            {
                "t": kind,
                "s": session.wamp_id,
                "a": session.authid,
                "r": session.authrole,
                "f": features.get("features", {}) if isinstance(features, dict) else {},
                "u": registration.pattern,
                "m": registration.match,
                "i": registration.invoke,
            },
            node,
        )

    # the dealer's observer

    def registered(self, callee: Callee, registration: Registration) -> None:
        if isinstance(callee, SessionRPC):
            self._send_registration("reg", callee, registration)

    def unregistered(self, callee: Callee, registration: Registration) -> None:
        if isinstance(callee, SessionRPC):
            self._send_registration("unreg", callee, registration)

    # calls to remote callees

    def send_call(self, callee: RemoteCallee, call: Call, registration: Registration) -> None:
        key = secrets.token_hex(8)
        node = self._nodes.get(callee.node)
        if node is None:
            self._dealer.callee_lost(call)
            return
        node.calls[key] = call
        call.remote = key
        caller = call.caller
        self.send(
            {
                "t": "call",
                "k": key,
                "s": callee.session.wamp_id,
                "u": call.procedure,
                "pu": registration.pattern,
                "m": registration.match,
                "x": _payload(call.payload),
                "p": call.receive_progress,
                "o": call.timeout,
                "c": [caller.wamp_id, caller.authid, caller.authrole]
                if call.disclose and caller is not None
                else None,
            },
            callee.node,
        )

    def send_interrupt(self, callee: RemoteCallee, call: Call, mode: str) -> None:
        key = call.remote
        node = self._nodes.get(callee.node)
        if key is None or node is None:
            return
        if mode == "killnowait":
            node.calls.pop(key, None)
        self.send({"t": "int", "k": key, "m": mode}, callee.node)

    # receiving

    def received(self, body: str) -> None:
        try:
            message = loads(body, binary=True)
            node = message["n"]
            handle = self._handlers[message["t"]]
        except (JSONError, KeyError, TypeError) as e:
            self.log.error(
                "Unreadable WAMP control message ({error}): {body!r}", error=e, body=body[:200]
            )
            return
        if node == self.node:
            return
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = _Node(self._clock.seconds())
        state.seen = self._clock.seconds()
        handle(node, state, message)

    def _on_hello(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        self._announce(node)

    def _on_alive(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        """
        Nothing more than being heard from.
        """

    def _on_bye(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        self._forget(node)

    def _forget(self, node: str) -> None:
        state = self._nodes.pop(node, None)
        if state is None:
            return
        for callee in state.callees.values():
            for registration in list(callee.registrations.values()):
                self._dealer.unregister(callee, registration, remote=True)
        for call in state.calls.values():
            self._dealer.callee_lost(call)

    def _on_register(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        session_id = message["s"]
        callee = state.callees.get(session_id)
        if callee is None:
            session = RemoteSession(session_id, message.get("a"), message.get("r"), message["f"])
            callee = state.callees[session_id] = RemoteCallee(self, node, session)
        key = (message["u"], message["m"])
        if key in callee.registrations:
            return
        match: Match = message["m"]
        try:
            registration = self._dealer.register(
                callee, message["u"], match, message["i"], remote=True
            )
        except DealerError as e:
            self.log.warn(
                "Node {node}'s registration of {uri} is not usable here: {error}",
                node=node,
                uri=message["u"],
                error=e.text,
            )
            return
        callee.registrations[key] = registration

    def _on_unregister(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        callee = state.callees.get(message["s"])
        if callee is None:
            return
        registration = callee.registrations.pop((message["u"], message["m"]), None)
        if registration is not None:
            self._dealer.unregister(callee, registration, remote=True)
        if not callee.registrations:
            del state.callees[message["s"]]

    def _on_revoke(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        session = self._realm.sessions.get(message["s"])
        registration = self._dealer.lookup(message["u"], message["m"])
        if session is None or session.peer is None or registration is None:
            return
        rpc = session.peer.rpc
        if rpc in registration.callees:
            rpc.revoke(registration, message["e"])
            self._dealer.unregister(rpc, registration)

    def _on_call(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        """
        Another node's call of one of this node's callees.
        """
        key = message["k"]
        reply = _RemoteReply(self, node, key)
        session = self._realm.sessions.get(message["s"])
        registration = self._dealer.lookup(message["pu"], message["m"])
        rpc = session.peer.rpc if session is not None and session.peer is not None else None
        if rpc is None or registration is None or rpc not in registration.callees:
            reply.error("cluso.error.callee_lost", text("the callee went away"))
            return
        caller = message.get("c")
        call = Call(
            message["u"],
            _unpayload(message["x"]),
            reply,
            caller=RemoteSession(*caller) if caller else None,
            receive_progress=bool(message.get("p")),
            timeout=int(message.get("o") or 0),
            disclose=caller is not None,
        )
        self.serving[key] = (call, rpc)
        rpc.invoke(call, registration)

    def _on_interrupt(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        serving = self.serving.get(message["k"])
        if serving is not None:
            call, rpc = serving
            if message["m"] == "killnowait":
                del self.serving[message["k"]]
            rpc.interrupt(call, message["m"])

    def _on_result(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        progress = bool(message.get("p"))
        call = state.calls.get(message["k"]) if progress else state.calls.pop(message["k"], None)
        if call is not None:
            self._dealer.answered(call, _unpayload(message["x"]), progress)

    def _on_error(self, node: str, state: _Node, message: Mapping[str, Any]) -> None:
        call = state.calls.pop(message["k"], None)
        if call is not None:
            self._dealer.failed(call, message["e"], _unpayload(message["x"]))
