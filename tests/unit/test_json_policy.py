"""
The one JSON policy: strict parsing and encoding, and events checked
before they are numbered, so no bad value reaches a history.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from cluso_router._json import JSONError, check, dumps, loads
from cluso_router.router.event import InvalidEvent
from cluso_router.router.router import Router
from cluso_router.testing import FakeSession
from cluso_router.ws.json.codec import ProtocolError, parse_request

NOT_STRICT = [
    b"NaN",
    b"[Infinity]",
    b'{"a": -Infinity}',
    b"1e400",
    b'{"x": -1e999}',
    b'"\\ud800"',
    b'{"\\udfff": 1}',
    b'["ok", "\\ud83d"]',
    b"[" * 100_000 + b"]" * 100_000,
]


@pytest.mark.parametrize("raw", NOT_STRICT, ids=lambda raw: raw[:20].decode())
def test_loads_refuses_what_is_not_strict_json(raw: bytes) -> None:
    """
    NaN, the infinities (also as overflowing numbers), lone surrogates in
    strings or keys and absurd nesting are refused with L{JSONError}.
    """
    with pytest.raises(JSONError):
        loads(raw)


def test_loads_keeps_valid_surrogate_pairs_and_plain_values() -> None:
    """
    An escaped surrogate pair is one character, not a lone surrogate; the
    largest finite floats and ordinary values parse as usual.
    """
    assert loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert loads('{"a": [1, 2.5, 1.7976931348623157e308, null, "é"]}') == {
        "a": [1, 2.5, 1.7976931348623157e308, None, "é"]
    }


@pytest.mark.parametrize(
    "value",
    [float("nan"), [float("inf")], {"a": "\ud800"}, {"\udc00": 1}],
    ids=["nan", "inf", "surrogate", "surrogate-key"],
)
def test_dumps_and_check_refuse_what_json_cannot_carry(value: Any) -> None:
    """
    What L{loads} refuses cannot be written either, and L{check} says so
    without encoding.
    """
    with pytest.raises(JSONError):
        dumps(value)
    with pytest.raises(JSONError):
        check(value)


def test_dumps_refuses_values_json_has_no_form_for() -> None:
    """
    An object JSON cannot represent is a L{JSONError}, not a TypeError.
    """
    with pytest.raises(JSONError):
        dumps({"when": object()})


def test_dumps_is_compact_utf8() -> None:
    """
    Output is compact, UTF-8, and reads back with any JSON parser.
    """
    encoded = dumps({"a": [1, "é"], "b": None})
    assert encoded == '{"a":[1,"é"],"b":null}'.encode()
    assert json.loads(encoded) == {"a": [1, "é"], "b": None}


def test_a_refused_message_still_names_its_request() -> None:
    """
    A message that is JSON but not strict JSON is refused with
    C{invalid_json}, naming the request's id so the client's call fails at
    once instead of timing out.
    """
    with pytest.raises(ProtocolError) as refused:
        parse_request(b'{"type": "send", "channel": "x", "data": "\\ud800", "id": 7}')
    assert refused.value.code == "invalid_json"
    assert refused.value.request_id == 7
    assert "surrogate" in refused.value.message


@pytest.mark.parametrize(
    ("channel", "data"),
    [
        ("build", float("nan")),
        ("build", {"x": float("-inf")}),
        ("build", "\ud800"),
        ("bad\ud800channel", 1),
        ("", 1),
        ("x" * 256, 1),
        ("ctl\x00", 1),
    ],
    ids=["nan", "inf", "surrogate-data", "surrogate-channel", "empty", "long", "control"],
)
def test_a_bad_event_takes_no_seq_and_never_reaches_history(channel: str, data: Any) -> None:
    """
    Router.publish refuses a bad event before numbering it: the channel's
    position does not move, the history holds only good events, and a
    replay after it returns every good one.
    """
    router = Router(clock=Clock())
    session = FakeSession()
    router.register_session(session)
    good = "build"
    router.subscribe(session, good)
    router.publish(good, {"n": 1})
    with pytest.raises(InvalidEvent):
        router.publish(channel, data)
    router.publish(good, {"n": 2})
    position = router.position(good)
    assert position.seq == 2
    replay = router.since(good, 0, position.epoch)
    assert replay.recovered
    assert [event.data for event in replay.events] == [{"n": 1}, {"n": 2}]
    assert [message["data"] for message in session.messages] == [{"n": 1}, {"n": 2}]
