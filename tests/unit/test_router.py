"""
The router core with fake sessions: subscriptions, fan-out, cleanup,
procedures and shutdown.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cluso_router.router.event import DeliveryReport, Event
from cluso_router.router.procedures import ProcedureError
from cluso_router.router.router import Router
from cluso_router.testing import FakeSession
from cluso_router.ws.json.codec import JsonEventEncoder


def make_router() -> Router:
    return Router(cwd="/work", clock=Clock(), wallclock=lambda: 1733758245.123)


def test_publish_reaches_only_subscribers_of_that_channel() -> None:
    """
    An event goes to every session subscribed to its channel and to no other.
    """
    router = make_router()
    a, b, c = FakeSession(), FakeSession(), FakeSession()
    for s in (a, b, c):
        router.register_session(s)
    router.subscribe(a, "files")
    router.subscribe(b, "files")
    router.subscribe(c, "git")

    report = router.publish("files", {"file": "x.py"})

    assert report == DeliveryReport(delivered=2, failed=0)
    expected = {
        "type": "event",
        "channel": "files",
        "data": {"file": "x.py"},
        "timestamp": "2024-12-09T15:30:45.123Z",
        "seq": 1,
    }
    assert a.messages == [expected]
    assert b.messages == [expected]
    assert c.messages == []


def test_subscribe_and_unsubscribe_are_idempotent() -> None:
    """
    Subscribing twice delivers once; unsubscribing something not subscribed
    is harmless; each call says whether it changed anything.
    """
    router = make_router()
    s = FakeSession()
    router.register_session(s)
    assert router.subscribe(s, "files") is True
    assert router.subscribe(s, "files") is False
    assert router.publish("files", 1).delivered == 1
    assert router.unsubscribe(s, "files") is True
    assert router.unsubscribe(s, "files") is False
    assert router.publish("files", 2).delivered == 0
    assert router.subscriber_counts() == {}


def test_unregister_removes_every_subscription_and_empty_channels() -> None:
    """
    Closing a session removes it from all its channels, and a channel with
    no subscribers left has no entry at all.
    """
    router = make_router()
    a, b = FakeSession(), FakeSession()
    router.register_session(a)
    router.register_session(b)
    for channel in ("files", "git", "search"):
        router.subscribe(a, channel)
    router.subscribe(b, "git")

    router.unregister_session(a)

    assert router.subscriber_counts() == {"git": 1}
    assert a.channels == ()
    assert router.connection_count == 1
    router.unregister_session(a)
    assert router.connection_count == 1


def test_one_failing_subscriber_does_not_stop_the_others() -> None:
    """
    A session that refuses the frame, and one whose delivery raises, are
    counted as failed while every other subscriber still gets the event.
    """
    router = make_router()
    sessions = [FakeSession() for _ in range(4)]
    for s in sessions:
        router.register_session(s)
        router.subscribe(s, "git")
    sessions[0].fail = True
    sessions[1].broken = True

    report = router.publish("git", {"type": "commit"})

    assert report == DeliveryReport(delivered=2, failed=2)
    assert [len(s.frames) for s in sessions] == [0, 0, 1, 1]
    assert router.failed["git"] == 2
    assert router.delivered["git"] == 2


class CountingEncoder(JsonEventEncoder):
    def __init__(self) -> None:
        self.calls = 0

    def encode_event(self, event: Event, subscription: object = None) -> bytes:
        self.calls += 1
        return super().encode_event(event, subscription)


def test_each_broadcast_encodes_once_per_dialect() -> None:
    """
    A thousand subscribers sharing a dialect cost one encoding, and they all
    receive the very same frame object.
    """
    router = make_router()
    encoder = CountingEncoder()
    sessions = [FakeSession(encoder=encoder) for _ in range(1000)]
    for s in sessions:
        router.register_session(s)
        router.subscribe(s, "files")

    router.publish("files", {"file": "a"})

    assert encoder.calls == 1
    assert len({id(s.frames[0]) for s in sessions}) == 1


def test_duplicate_connection_id_is_refused() -> None:
    """
    Two sessions can never share an id.
    """
    router = make_router()
    router.register_session(FakeSession("conn-1"))
    with pytest.raises(ValueError):
        router.register_session(FakeSession("conn-1"))


def test_publish_of_non_json_data_raises() -> None:
    """
    Data that is not JSON (here NaN) is refused loudly rather than sent as
    something browsers cannot parse.
    """
    router = make_router()
    s = FakeSession()
    router.register_session(s)
    router.subscribe(s, "x")
    with pytest.raises(ValueError):
        router.publish("x", float("nan"))
    assert s.frames == []


def test_server_info_procedure() -> None:
    """
    C{server.info} reports version, root, channels with subscriber counts,
    connections and uptime from the injected clock.
    """
    clock = Clock()
    router = Router(cwd="/work", clock=clock)
    router.startService()
    s = FakeSession()
    router.register_session(s)
    router.subscribe(s, "files")
    clock.advance(12.5)

    results: list[dict[str, object]] = []
    router.call("server.info", None).addCallback(results.append)

    (info,) = results
    assert info["cwd"] == "/work"
    assert info["connections"] == 1
    assert info["channels"] == {"files": 1}
    assert info["uptimeSeconds"] == 12.5
    assert "server.info" in info["procedures"]  # type: ignore[operator]


def test_procedures_may_return_values_deferreds_or_coroutines() -> None:
    """
    Each kind of procedure result arrives through the same Deferred.
    """
    from twisted.internet.defer import succeed

    router = make_router()

    async def coroutine(data: object) -> object:
        return {"echo": data}

    router.register("plain", lambda data: data)
    router.register("deferred", lambda data: succeed([data]))
    router.register("coroutine", coroutine)
    got: list[object] = []
    for name in ("plain", "deferred", "coroutine"):
        router.call(name, 7).addCallback(got.append)
    assert got == [7, [7], {"echo": 7}]


def test_unknown_procedure_and_duplicate_registration() -> None:
    """
    Calling a name nobody registered fails with C{no_such_procedure};
    registering a name twice is an error.
    """
    router = make_router()
    failures: list[object] = []
    router.call("nope", None).addErrback(lambda f: failures.append(f.value))
    (error,) = failures
    assert isinstance(error, ProcedureError)
    assert error.code == "no_such_procedure"
    with pytest.raises(ValueError):
        router.register("server.info", lambda data: None)


def test_stop_closes_sessions_with_going_away_and_aborts_laggards() -> None:
    """
    Stopping the router closes each session with 1001 and fires once all
    are gone; sessions that never finish closing are aborted after the
    timeout.
    """
    clock = Clock()
    router = Router(clock=clock)
    router.startService()
    polite, stuck = FakeSession(), FakeSession()
    router.register_session(polite)
    router.register_session(stuck)

    stopped: list[object] = []
    router.stopService().addCallback(stopped.append)

    assert polite.closed == (1001, "server shutting down")
    assert stuck.closed == (1001, "server shutting down")
    router.unregister_session(polite)
    assert stopped == []
    clock.advance(2.0)
    assert stuck.aborted
    assert len(stopped) == 1
    assert router.connection_count == 0
