"""
The mapping between the JSON dialect's one value and WAMP's positional and
keyword arguments, the JSON form of binary values, and the envelope that
carries an event between nodes.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluso_router import _json
from cluso_router.backplane.envelope import envelope, event_of
from cluso_router.router.event import Audience, Extras
from cluso_router.router.payload import arguments_of, data_of

#: The four shapes of a WAMP payload and their JSON-dialect value.
SHAPES = [
    ([{"file": "a.py"}], None, {"file": "a.py"}),
    ([1, "x"], None, {"args": [1, "x"], "kwargs": {}}),
    ([], {"k": "v"}, {"args": [], "kwargs": {"k": "v"}}),
    ([1, 2], {"k": "v"}, {"args": [1, 2], "kwargs": {"k": "v"}}),
]


@pytest.mark.parametrize(("args", "kwargs", "data"), SHAPES)
def test_each_shape_maps_both_ways(args: list[Any], kwargs: Any, data: Any) -> None:
    """
    One positional argument and no keyword arguments is the JSON value
    itself; every other payload is spelled out as C{{args, kwargs}}; and
    each value maps back to the payload it came from.
    """
    assert data_of(args, kwargs) == data
    assert arguments_of(data) == (args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "data"),
    [
        (None, None, {"args": [], "kwargs": {}}),
        ([None], None, None),
        ([[1, 2]], None, [1, 2]),
        ([{"args": 1}], None, {"args": 1}),
    ],
)
def test_edges_of_the_mapping(args: Any, kwargs: Any, data: Any) -> None:
    """
    No payload at all is spelled out too; a single null, list or object
    that is not exactly C{{args: [...], kwargs: {...}}} is the one argument.
    """
    assert data_of(args, kwargs) == data
    assert arguments_of(data) == (list(args or []), kwargs)


@pytest.mark.parametrize(
    "data",
    [
        {"args": [1], "kwargs": {}, "more": 1},
        {"args": "1", "kwargs": {}},
        {"args": [1], "kwargs": []},
        {"args": [1]},
    ],
)
def test_only_the_exact_spelled_out_form_unpacks(data: Any) -> None:
    """
    A JSON-dialect value is read as a spelled-out payload only with exactly
    the two keys, an array and an object; anything else is one argument.
    """
    assert arguments_of(data) == ([data], None)


def test_binary_values_in_json() -> None:
    """
    With C{binary}, bytes become WAMP's binary strings (NUL plus base64) and
    such strings come back as bytes; without it they are refused on the
    way out and stay strings on the way in. A malformed one is refused.
    """
    value = [b"\x01\x02", {"k": b""}, "plain"]

    encoded = _json.dumps(value, binary=True)

    assert encoded == b'["\\u0000AQI=",{"k":"\\u0000"},"plain"]'
    assert _json.loads(encoded, binary=True) == value
    assert _json.loads(encoded) == ["\x00AQI=", {"k": "\x00"}, "plain"]
    with pytest.raises(_json.JSONError):
        _json.dumps(value)
    with pytest.raises(_json.JSONError, match="base64"):
        _json.loads(b'["\\u0000not base64!"]', binary=True)


def test_envelope_carries_a_wamp_publication() -> None:
    """
    Between nodes an event keeps its publication id and everything a WAMP
    publisher gave: arguments (binary ones too), details, a transparent
    payload and whom it is for; the JSON value is read as plain JSON.
    """
    extras = Extras(
        args=[b"\x00raw", 1],
        kwargs={"k": "v"},
        details={"publisher": 7},
        payload=b"opaque",
        audience=Audience(exclude=frozenset({7}), eligible_authrole=frozenset()),
    )
    body = envelope("t", "2024-12-09T15:30:45.123Z", b'"\\u0000AA=="', 42, extras)

    event = event_of(body, 5)

    assert (event.channel, event.data, event.seq, event.publication) == ("t", "\x00AA==", 5, 42)
    assert event.extras == extras


def test_envelope_of_a_plain_event() -> None:
    """
    An event with nothing beyond its JSON value has no WAMP part.
    """
    body = envelope("files", "2024-12-09T15:30:45.123Z", b'{"a":1}', 9, None)

    event = event_of(body, 1)

    assert b'"x"' not in body
    assert (event.data, event.publication, event.extras) == ({"a": 1}, 9, None)
