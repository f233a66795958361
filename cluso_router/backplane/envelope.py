"""
An event as it travels between nodes: one JSON object with the channel,
timestamp, data and publication id, plus what a WAMP publisher gave beyond
the data (its arguments as given, EVENT details, a transparent payload and
whom the event is for).

The data is written and read as plain JSON, as the JSON dialect sees it;
only the WAMP part carries binary values (as WAMP's binary strings), so a
JSON-dialect string that happens to look like one stays a string.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from cluso_router._json import binary_values, dumps, loads
from cluso_router.router.event import Audience, Event, Extras


def envelope(
    channel: str, timestamp: str, encoded: bytes, publication: int, extras: Extras | None
) -> bytes:
    """
    The envelope of an event whose data's JSON is C{encoded}.
    """
    head = (
        b'{"c":'
        + dumps(channel)
        + b',"t":'
        + dumps(timestamp)
        + b',"i":%d' % publication
        + b',"d":'
        + encoded
    )
    if extras is None:
        return head + b"}"
    return head + b',"x":' + dumps(_extras_fields(extras), binary=True) + b"}"


def _extras_fields(extras: Extras) -> dict[str, Any]:
    wamp: dict[str, Any] = {}
    if extras.args is not None:
        wamp["a"] = extras.args
    if extras.kwargs is not None:
        wamp["k"] = extras.kwargs
    if extras.details:
        wamp["e"] = dict(extras.details)
    if extras.payload is not None:
        wamp["p"] = extras.payload
    audience = extras.audience
    if audience is not None:
        wamp["u"] = {
            field.name: sorted(value)
            for field in fields(Audience)
            if (value := getattr(audience, field.name)) is not None
            and (value or field.name.startswith("eligible"))
        }
    return wamp


def event_of(body: str | bytes, seq: int) -> Event:
    """
    The event numbered C{seq} in an envelope.

    @raise ValueError: (or C{KeyError}, C{TypeError}) for one that is not
        an envelope.
    """
    body_fields = loads(body)
    extras = body_fields.get("x")
    return Event(
        body_fields["c"],
        body_fields["d"],
        body_fields["t"],
        seq,
        publication=int(body_fields.get("i", 0)),
        extras=None if extras is None else _extras(binary_values(extras)),
    )


def _extras(wamp: dict[str, Any]) -> Extras:
    audience = wamp.get("u")
    return Extras(
        args=wamp.get("a"),
        kwargs=wamp.get("k"),
        details=wamp.get("e"),
        payload=wamp.get("p"),
        audience=None
        if audience is None
        else Audience(**{name: frozenset(values) for name, values in audience.items()}),
    )
