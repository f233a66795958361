"""
The parts WAMP adds below the wire: payload and error mapping, message
parsing, the router's filtered and per-subscription delivery, and progress
reporting of procedures.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from cluso_router.router.procedures import ProcedureRegistry
from cluso_router.router.router import Router
from cluso_router.testing import FakeSession, decode_text_frame
from cluso_router.ws.wamp.codec import InvalidMessage, decode, error_code, error_uri, parse
from cluso_router.ws.wamp.serializers import JSON
from cluso_router.ws.wamp.wire import WEBSOCKET, wire

WAMP_ENCODER = wire(JSON, WEBSOCKET).encoder


def read(payload: bytes) -> Any:
    """
    The one message in a JSON frame.
    """
    (raw,) = decode(JSON, payload)
    return parse(raw)[0]


def test_error_uris_and_codes() -> None:
    """
    Router error codes map to WAMP's own URIs where WAMP has one and to
    C{cluso.error.*} otherwise, and back; foreign URIs become snake_case.
    """
    assert error_uri("no_such_procedure") == "wamp.error.no_such_procedure"
    assert error_uri("path_traversal") == "cluso.error.path_traversal"
    assert error_code("wamp.error.no_such_procedure") == "no_such_procedure"
    assert error_code("cluso.error.path_traversal") == "path_traversal"
    assert error_code("com.Example.bad-thing") == "com_example_bad_thing"


def test_parse_uses_autobahn_messages() -> None:
    """
    A valid frame becomes Autobahn's message object, with its options as
    sent; WAMP's binary strings become bytes, as WAMP's JSON says.
    """
    (raw,) = decode(JSON, b'[16, 3, {"acknowledge": true, "x": 1}, "chat", ["\\u0000AAEC"]]')

    msg, options = parse(raw)

    assert type(msg).__name__ == "Publish"
    assert (msg.request, msg.topic, msg.acknowledge) == (3, "chat", True)
    assert msg.args == [b"\x00\x01\x02"]
    assert options == {"acknowledge": True, "x": 1}


@pytest.mark.parametrize(
    ("payload", "request_", "uri_error", "quiet"),
    [
        (b"nope", None, False, False),
        (b"[NaN]", None, False, False),
        (b"[]", None, False, False),
        (b'["1"]', None, False, False),
        (b"[99, 1]", None, False, False),
        (b'[1, "cluso", {}]', None, False, False),
        (b'[32, 5, {}, "a b"]', (32, 5), True, False),
        (b"[48, 6, {}, 7]", (48, 6), True, False),
        (b'[16, 7, {"acknowledge": "yes"}, "t"]', (16, 7), False, True),
        (b'[16, 8, {"acknowledge": true}, "a b"]', (16, 8), True, False),
        (b'[32, -1, {}, "a b"]', None, False, False),
    ],
)
def test_parse_refuses_invalid_frames(
    payload: bytes, request_: Any, uri_error: bool, quiet: bool
) -> None:
    """
    Invalid frames raise L{InvalidMessage}, naming the request when it is
    a readable request (to be answered with ERROR), whether a URI was the
    problem, and whether it is a PUBLISH that wants no answer.
    """
    with pytest.raises(InvalidMessage) as raised:
        read(payload)

    error = raised.value
    assert (error.request, error.uri_error, error.quiet) == (request_, uri_error, quiet)


def test_publish_with_exclude_and_eligible() -> None:
    """
    A publish leaves out the excluded sessions and, given C{eligible},
    everyone not in it; each is still recorded in the channel's history,
    and only what was delivered is counted.
    """
    router = Router(clock=Clock())
    sessions = [FakeSession() for _ in range(4)]
    for session in sessions:
        router.register_session(session)
        router.subscribe(session, "room")

    excluded = router.publish("room", "a", exclude={sessions[1]})
    limited = router.publish("room", "b", exclude={sessions[0]}, eligible=set(sessions[:3]))

    assert [[m["data"] for m in s.messages] for s in sessions] == [["a"], ["b"], ["a", "b"], ["a"]]
    assert [(r.delivered, r.failed) for r in (excluded, limited)] == [(3, 0), (2, 0)]
    assert router.position("room").seq == 2


def test_wamp_sessions_get_each_matching_subscription() -> None:
    """
    A WAMP session gets an event once per matching subscription (its EVENT
    names the subscription), all with one publication id, while a JSON
    session subscribed the same way still gets it once.
    """
    router = Router(clock=Clock())
    wamp = FakeSession(encoder=WAMP_ENCODER)
    plain = FakeSession()
    for session in (wamp, plain):
        router.register_session(session)
        router.subscribe(session, "build.web.done")
        router.subscribe(session, "build.", "prefix")

    router.publish("build.web.done", {"ok": True})

    events = [decode_text_frame(frame) for frame in wamp.frames]
    exact = router.subscription("build.web.done")
    prefix = router.subscription("build.", "prefix")
    assert exact is not None
    assert prefix is not None
    assert sorted((e[0], e[1], e[3].get("topic")) for e in events) == sorted(
        [(36, exact.id, None), (36, prefix.id, "build.web.done")]
    )
    assert events[0][2] == events[1][2]
    assert [e[4] for e in events] == [[{"ok": True}], [{"ok": True}]]
    assert len(plain.frames) == 1


def test_json_sessions_dedup_even_beside_wamp_sessions() -> None:
    """
    With WAMP sessions around, a JSON session matched by two subscriptions
    still gets the event once.
    """
    router = Router(clock=Clock())
    plain = FakeSession()
    router.register_session(FakeSession(encoder=WAMP_ENCODER))
    router.register_session(plain)
    router.subscribe(plain, "a.b")
    router.subscribe(plain, "a.", "prefix")

    router.publish("a.b", 1)

    assert [json.loads(json.dumps(m))["data"] for m in plain.messages] == [1]


@pytest.mark.parametrize("asked", [True, False])
def test_progress_reaches_procedures_that_declare_it(asked: bool) -> None:
    """
    A procedure declaring C{progress} gets the caller's progress callable
    when the caller gave one; one that does not declare it is called
    without it either way.
    """
    registry = ProcedureRegistry()
    seen: list[Any] = []

    def streaming(data: Any, *, progress: Any = None) -> str:
        if progress is not None:
            progress(f"{data}...")
        return "done"

    registry.register("streaming", streaming)
    registry.register("plain", lambda data: data)
    progress = seen.append if asked else None
    results: list[Any] = []

    registry.call("streaming", "think", progress).addCallback(results.append)
    registry.call("plain", "same", progress).addCallback(results.append)

    assert results == ["done", "same"]
    assert seen == (["think..."] if asked else [])
