"""
The one JSON policy of the server, used at every door: WebSocket dialects,
HTTP bodies, the Redis backplane, language-server framing.

Strict both ways: NaN, the infinities (also as overflowing numbers such as
C{1e400}) and lone UTF-16 surrogates are not JSON that every peer can read
(browsers' C{JSON.parse} rejects the first, UTF-8 cannot carry the last),
so they are refused on the way in and can never be produced on the way out.
A value that passed L{loads} always passes L{dumps}.

WAMP carries binary values; in JSON its convention is a string made of a
NUL character and the value's base64 (C{"\\u0000AAEC"}). With C{binary},
L{dumps} writes C{bytes} that way and L{loads} reads such strings back as
C{bytes}; without it neither happens, so the JSON dialect sees strings.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Final

__all__ = ["JSONError", "binary_values", "check", "dumps", "loads"]

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


def _binary_string(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\x00" + base64.b64encode(value).decode("ascii")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_BINARY_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_binary_string
)
#: How a NUL character (which starts a binary string) looks in JSON text.
_NUL_ESCAPE: Final = b"\\u0000"
#: A \\u escape of a surrogate code point; without one, parsed strings
#: hold none (raw surrogates cannot appear in valid UTF-8).
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def dumps(value: Any, binary: bool = False) -> bytes:
    """
    C{value} as compact UTF-8 JSON; with C{binary}, C{bytes} as WAMP's
    binary strings.

    @raise JSONError: for NaN, infinities, lone surrogates and values
        JSON has no form for.
    """
    try:
        return (_BINARY_ENCODER if binary else _ENCODER).encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise JSONError("a string holds a lone UTF-16 surrogate") from None
    except RecursionError:
        raise JSONError("the value is nested too deeply") from None
    except (TypeError, ValueError) as e:
        raise JSONError(str(e)) from None


def loads(data: bytes | str, binary: bool = False) -> Any:
    """
    Parse C{data}, refusing what L{dumps} could not write back; with
    C{binary}, WAMP's binary strings become C{bytes}.

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
    if binary and _NUL_ESCAPE in raw:
        value = binary_values(value)
    return value


def binary_values(value: Any) -> Any:
    """
    C{value} (as parsed from JSON) with each WAMP binary string replaced by
    its bytes.

    @raise JSONError: when such a string is not base64.
    """
    try:
        return _decode_binary(value)
    except RecursionError:
        raise JSONError("the value is nested too deeply") from None


def _decode_binary(value: Any) -> Any:
    """
    C{value} with each string that starts with a NUL character replaced by
    the bytes its base64 rest encodes.

    @raise JSONError: when such a string is not base64.
    """
    if isinstance(value, str):
        if value[:1] != "\x00":
            return value
        try:
            return base64.b64decode(value[1:], validate=True)
        except (binascii.Error, ValueError):
            raise JSONError("a binary string (starting with \\u0000) is not base64") from None
    if isinstance(value, list):
        return [_decode_binary(item) for item in value]
    if isinstance(value, dict):
        return {key: _decode_binary(item) for key, item in value.items()}
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
