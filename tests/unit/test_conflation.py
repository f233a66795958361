"""
Conflation: while a client is behind, a newer event with the same key
replaces the older queued one (latest diagnostics per file, latest search
progress per search, latest git status) instead of growing its queue.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluso_router._json import dumps
from cluso_router.router.conflation import keyed_frame
from cluso_router.router.router import Router
from cluso_router.sources.lsp.channel import DIAGNOSTICS, diagnostics_key
from cluso_router.sources.search.channel import SEARCH, search_key
from cluso_router.testing import decode_text_frame
from cluso_router.workspace.git import GIT, git_key
from cluso_router.ws.json.codec import JSON_ENCODER, text_frame
from cluso_router.ws.session import Session


class Connection:
    def sendPing(self, payload: bytes | None = None) -> None:
        pass

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        self.closed = code

    def dropConnection(self, abort: bool = False) -> None:
        pass


def frames_of(transport: StringTransport) -> list[Any]:
    data, out = transport.value(), []
    while data:
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        out.append(decode_text_frame(data[: offset + length]))
        data = data[offset + length :]
    return out


def paused_session(
    router: Router, max_queue_bytes: int = 1 << 20
) -> tuple[Session, StringTransport]:
    transport = StringTransport()
    session = Session(
        Connection(),
        transport,
        JSON_ENCODER,
        max_queue_bytes=max_queue_bytes,
        counters=router.queue_counters,
    )
    session.attach()
    router.register_session(session)
    session.pauseProducing()
    return session, transport


def diagnostics(file: str, version: int) -> dict[str, Any]:
    return {
        "diagnostics": [
            {"file": file, "line": version, "column": 1, "message": "m", "severity": "error"}
        ],
        "cleared": False,
    }


def test_queue_keeps_the_latest_per_key_in_order() -> None:
    """
    A keyed frame replaces the queued one with its key and goes to the end,
    so the client gets the original sequence minus superseded events; the
    queue's byte count follows, and the replacement is counted by channel.
    """
    router = Router(clock=Clock())
    session, transport = paused_session(router)
    a1 = keyed_frame(text_frame(dumps({"n": "a1"})), "diagnostics", "a")
    b1 = keyed_frame(text_frame(dumps({"n": "b1"})), "diagnostics", "b")
    plain = text_frame(dumps({"n": "plain"}))
    a2 = keyed_frame(text_frame(dumps({"n": "a2-longer"})), "diagnostics", "a")
    for frame in (a1, b1, plain, a2):
        assert session.deliver(frame)
    assert session.queued_bytes == len(b1) + len(plain) + len(a2)
    assert router.queue_counters.conflated == {"diagnostics": 1}
    session.resumeProducing()
    assert [m["n"] for m in frames_of(transport)] == ["b1", "plain", "a2-longer"]
    assert session.queued_bytes == 0


def test_a_storm_of_updates_for_one_key_stays_one_entry() -> None:
    """
    Ten thousand updates for the same file while the client is behind
    leave one queued frame, not ten thousand (superseded entries are
    compacted away), and never reach the queue bound.
    """
    router = Router(clock=Clock())
    router.claims.claim(DIAGNOSTICS, "lsp")
    session, transport = paused_session(router, max_queue_bytes=4096)
    router.subscribe(session, "diagnostics")
    for version in range(10_000):
        assert router.publish("diagnostics", diagnostics("src/a.py", version)).delivered == 1
    assert len(session._queue) < 200
    session.resumeProducing()
    received = frames_of(transport)
    assert [m["data"]["diagnostics"][0]["line"] for m in received] == [9999]
    assert router.queue_counters.conflated["diagnostics"] == 9999
    assert router.queue_counters.slow_consumer_closes == 0


def test_built_in_channel_claims_declare_their_keys() -> None:
    """
    Behind a paused client, once the built-in channels are claimed as their
    owners claim them: diagnostics keep the latest per file (a batch naming
    several files is never dropped), search progress without results the
    latest per search (batches of results are all kept), git the latest
    status (commits and branch changes are all kept); other channels keep
    everything.
    """
    router = Router(clock=Clock())
    for spec, owner in ((DIAGNOSTICS, "lsp"), (SEARCH, "search"), (GIT, "workspace")):
        router.claims.claim(spec, owner)
    session, transport = paused_session(router)
    for channel in ("diagnostics", "search", "git", "files"):
        router.subscribe(session, channel)
    mixed = {
        "diagnostics": [
            {"file": "a", "line": 1, "column": 1, "message": "m", "severity": "error"},
            {"file": "b", "line": 1, "column": 1, "message": "m", "severity": "error"},
        ],
        "cleared": False,
    }
    for version in range(3):
        router.publish("diagnostics", diagnostics("a.py", version))
        router.publish("diagnostics", {"file": "b.py", "diagnostics": [], "cleared": True})
        router.publish("diagnostics", mixed)
        router.publish("search", {"searchId": "s1", "completed": version, "results": []})
        router.publish("search", {"searchId": "s1", "completed": version, "results": [version]})
        router.publish("git", {"type": "status", "message": f"status {version}"})
        router.publish("git", {"type": "commit", "message": f"commit {version}"})
        router.publish("files", {"file": "x", "event": "change", "n": version})
    session.resumeProducing()
    by_channel: dict[str, list[Any]] = {}
    for message in frames_of(transport):
        by_channel.setdefault(message["channel"], []).append(message["data"])
    unkeyed_or_a = [
        d["diagnostics"][0]["line"] for d in by_channel["diagnostics"] if "file" not in d
    ]
    assert unkeyed_or_a == [1, 1, 2, 1]
    assert len([d for d in by_channel["diagnostics"] if d.get("file") == "b.py"]) == 1
    assert [(d["completed"], d["results"]) for d in by_channel["search"]] == [
        (0, [0]),
        (1, [1]),
        (2, []),
        (2, [2]),
    ]
    assert [d["message"] for d in by_channel["git"]] == [
        "commit 0",
        "commit 1",
        "status 2",
        "commit 2",
    ]
    assert [d["n"] for d in by_channel["files"]] == [0, 1, 2]


def test_key_functions() -> None:
    """
    The built-in key functions: one file per diagnostics event, a search id
    only without results, C{status} only for git status.
    """
    assert diagnostics_key(diagnostics("a.py", 1)) == "a.py"
    assert diagnostics_key({"file": "b.py", "diagnostics": []}) == "b.py"
    assert diagnostics_key({"diagnostics": []}) is None
    assert diagnostics_key("not a dict") is None
    assert search_key({"searchId": 7, "results": []}) == "7"
    assert search_key({"searchId": 7, "results": [{}]}) is None
    assert search_key({"query": "q"}) is None
    assert git_key({"type": "status"}) == "status"
    assert git_key({"type": "branch"}) is None


def test_a_failing_key_function_never_stops_delivery() -> None:
    """
    A channel's key function that raises is logged and the event is
    delivered unkeyed.
    """
    router = Router(clock=Clock())
    session, transport = paused_session(router)
    router.subscribe(session, "custom")
    router.conflate("custom", lambda data: data["missing"])
    assert router.publish("custom", {}).delivered == 1
    router.conflate("custom", None)
    session.resumeProducing()
    assert len(frames_of(transport)) == 1
