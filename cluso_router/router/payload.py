"""
The one mapping between the JSON dialect's single C{data} value and a WAMP
payload (positional C{args} and keyword C{kwargs}).

Between WAMP peers a payload travels as it was given. Whenever it crosses
to the JSON dialect (an event for a JSON-dialect subscriber, a router
procedure called by a WAMP caller, a WAMP callee invoked by a JSON-dialect
client) it goes through these two functions:

  - exactly one positional argument and no keyword arguments is that
    argument: C{args [x]} <-> C{data x};
  - anything else is spelled out: C{args [1, 2]}, C{kwargs {"k": 1}} <->
    C{data {"args": [1, 2], "kwargs": {"k": 1}}} (both keys always present).

The way back reads an object with exactly the keys C{args} (an array) and
C{kwargs} (an object) as that payload, and any other value as the one
positional argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Args = list[Any]
Kwargs = dict[str, Any] | None


def data_of(args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> Any:
    """
    The JSON dialect's value for a WAMP payload.
    """
    if not kwargs and args is not None and len(args) == 1:
        return args[0]
    return {"args": list(args or ()), "kwargs": dict(kwargs or {})}


def spelled_out(data: Any) -> tuple[Args, dict[str, Any]] | None:
    """
    The arguments of a value spelled out as C{{"args": [...], "kwargs":
    {...}}}, or C{None} for any other value.
    """
    if (
        type(data) is dict
        and len(data) == 2
        and type(data.get("args")) is list
        and type(data.get("kwargs")) is dict
    ):
        return list(data["args"]), dict(data["kwargs"])
    return None


def arguments_of(data: Any) -> tuple[Args, Kwargs]:
    """
    The WAMP payload for a JSON dialect's value: C{(args, kwargs)}, with
    C{kwargs} C{None} when there are none.
    """
    arguments = spelled_out(data)
    if arguments is None:
        return [data], None
    return arguments[0], arguments[1] or None
