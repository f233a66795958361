"""
The value that travels from a publisher to every subscriber.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cluso_router._json import JSONError, dumps
from cluso_router.router.channels import channel_problem

#: Publication ids are integers in [1, 2**53], as WAMP's ids (exactly
#: representable in JavaScript).
MAX_PUBLICATION: Final = 2**53


def new_publication_id() -> int:
    """
    A random publication id: every event gets one, so all the frames of one
    event (per dialect, per serializer, per node) name it alike.
    """
    return secrets.randbelow(MAX_PUBLICATION) + 1


class InvalidEvent(ValueError):
    """
    An event refused before it was numbered: a bad channel name, or data
    that is not strict JSON (see L{cluso_router._json}).
    """

    code = "invalid_event"


def encode_data(channel: str, data: Any, binary: bool = False) -> bytes:
    """
    The strict JSON of C{data}, checked with C{channel} before an event is
    numbered, kept or sent, so a bad one never takes a C{seq} or reaches
    a history. With C{binary} (a WAMP peer's payload), binary values are
    written as WAMP's binary strings; otherwise they are refused.

    @raise InvalidEvent: saying what is wrong.
    """
    problem = channel_problem(channel)
    if problem is not None:
        raise InvalidEvent(problem)
    try:
        return dumps(data, binary=binary)
    except JSONError as e:
        raise InvalidEvent(f"event data is not valid JSON: {e}") from None


@dataclass(frozen=True, slots=True)
class Audience:
    """
    Whom a publication is for, by WAMP identity: publisher exclusion and
    subscriber black- and whitelisting. Each node resolves it against its
    own sessions (L{cluso_router.router.router.Router.audience}), so it
    travels between nodes as it is.

    An C{eligible*} set, when given, limits delivery to the sessions it
    names; several given ones must all name a session.
    """

    exclude: frozenset[int] = frozenset()
    exclude_authid: frozenset[str] = frozenset()
    exclude_authrole: frozenset[str] = frozenset()
    eligible: frozenset[int] | None = None
    eligible_authid: frozenset[str] | None = None
    eligible_authrole: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Extras:
    """
    What a WAMP publisher gave beyond the event's JSON value, so WAMP
    subscribers get it unchanged.

    @ivar args: the positional arguments as published (with C{kwargs}; the
        event's C{data} is their L{cluso_router.router.payload.data_of}).
    @ivar details: keys added to the EVENT's details (publisher
        identification, payload passthru options).
    @ivar payload: a transparent payload (Autobahn's C{enc_*} form), sent on
        untouched in place of arguments.
    @ivar audience: whom the event is for, when the publisher said.
    """

    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    details: Mapping[str, Any] | None = None
    payload: bytes | None = None
    audience: Audience | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """
    One published event: what every wire dialect encodes for its subscribers.

    @ivar encoded: the strict JSON of C{data}, when the publisher made it
        (dialects that speak JSON reuse it instead of encoding again).
    @ivar publication: the event's publication id (0 for none).
    @ivar extras: what a WAMP publisher gave beyond C{data}.
    """

    channel: str
    data: Any
    timestamp: str
    seq: int | None = None
    encoded: bytes | None = None
    publication: int = 0
    extras: Extras | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """
    How one publish went on this node: frames handed to subscribers, and
    subscribers that could not take one; C{publication} is the event's id.
    """

    delivered: int
    failed: int
    publication: int = field(default=0, compare=False)
