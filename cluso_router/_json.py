"""
The one JSON policy of the server, used at every door: WebSocket dialects,
HTTP bodies, the Redis backplane, language-server framing.

Strict both ways: NaN, the infinities (also as overflowing numbers such as
C{1e400}) and lone UTF-16 surrogates are not JSON that every peer can read
(browsers' C{JSON.parse} rejects the first, UTF-8 cannot carry the last),
so they are refused on the way in and can never be produced on the way out.
A value that passed L{loads} always passes L{dumps}.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

__all__ = ["JSONError", "check", "dumps", "loads"]

MAX_DEPTH: Final = 500


class JSONError(ValueError):
    """
    Input that is not strict JSON, or a value that cannot be encoded as it.

    @ivar parsed: for input that is JSON but not strict JSON (a lone
        surrogate), what a lenient parser made of it, so a reply can still
        name the request's id; else C{None}.
    """

    def __init__(self, message: str, parsed: Any = None) -> None:
        super().__init__(message)
        self.parsed = parsed


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
#: A \\u escape of a surrogate code point; without one, parsed strings
#: hold none (raw surrogates cannot appear in valid UTF-8).
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def dumps(value: Any) -> bytes:
    """
    C{value} as compact UTF-8 JSON.

    @raise JSONError: for NaN, infinities, lone surrogates and values
        JSON has no form for.
    """
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise JSONError("a string holds a lone UTF-16 surrogate") from None
    except RecursionError:
        raise JSONError("the value is nested too deeply") from None
    except (TypeError, ValueError) as e:
        raise JSONError(str(e)) from None


def loads(data: bytes | str) -> Any:
    """
    Parse C{data}, refusing what L{dumps} could not write back.

    @raise JSONError: saying what is wrong.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise JSONError("the value is nested too deeply") from None
    except JSONError:
        raise
    except ValueError as e:
        raise JSONError(str(e)) from None
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:
            check(value)
        except JSONError as e:
            raise JSONError(str(e), value) from None
    return value


def check(value: Any) -> None:
    """
    Refuse a value L{dumps} could not write: lone surrogates in strings or
    keys, NaN or infinite floats, nesting deeper than L{MAX_DEPTH}.

    @raise JSONError: saying what is wrong.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JSONError("the value is nested too deeply")
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise JSONError("a string holds a lone UTF-16 surrogate")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JSONError(f"{item} is not valid JSON")
        elif isinstance(item, dict):
            for key, member in item.items():
                stack.append((key, depth + 1))
                stack.append((member, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((member, depth + 1) for member in item)


def _refuse_constant(name: str) -> Any:
    raise JSONError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JSONError(f"{text} is out of range for a JSON number")
    return number
