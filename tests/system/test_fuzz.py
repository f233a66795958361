"""
Fuzzing the WebSocket endpoint of the real server with hypothesis: random
JSON values, near-miss requests, random bytes (invalid UTF-8 included) as
text and binary frames, deep nesting, huge numbers and malformed frames.
Nothing crashes the server; every frame gets an answer or one of the
documented close codes; a second client keeps working throughout.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.rawws import CLOSE, TEXT, RawWebSocket, frame
from support.servers import ChildServer, start_twistd, stop_child_server

BINARY = 0x2
#: Close codes the server may answer bad input with (docs/operations.md).
DOCUMENTED_CLOSES = {1002, 1007, 1008, 1009}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
near_misses = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "invoke", "request", "send", "event"])},
    optional={
        "channel": json_values | st.text(min_size=200, max_size=300),
        "handler": json_values,
        "id": json_values,
        "data": json_values,
        "match": st.sampled_from(["exact", "prefix", "wildcard", "other"]) | json_values,
        "since": json_values,
    },
)


class Fuzzer:
    """
    One connection that is replaced whenever the server closes it.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.ids = itertools.count()
        self.ws = self._connect()

    def _connect(self) -> RawWebSocket:
        ws = RawWebSocket(self.host, self.port)
        ws.sock.settimeout(10)
        assert ws.receive_json()["data"]["status"] == "connected"
        return ws

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.send_raw(frame(opcode, payload))

    def send_raw(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.ws.sock.sendall(data)

    def outcome(self) -> tuple[list[Any], int | None]:
        """
        Send a probe request and read up to its answer: the messages that
        came before it, and C{None}; or, if the server closed the
        connection, those messages and the close code (0 for a bare drop),
        then reconnect.
        """
        probe = next(self.ids)
        request = {"type": "invoke", "id": f"probe-{probe}", "channel": "server.info"}
        self.send_raw(frame(TEXT, json.dumps(request).encode()))
        before: list[Any] = []
        try:
            while True:
                opcode, payload = self.ws.receive_frame()
                if opcode == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
                    return self._reconnected(before, code)
                if opcode != TEXT:
                    continue
                message = json.loads(payload)
                if message.get("id") == f"probe-{probe}":
                    assert message["data"]["version"]
                    return before, None
                before.append(message)
        except (EOFError, ConnectionError):
            return self._reconnected(before, 0)

    def _reconnected(self, before: list[Any], code: int) -> tuple[list[Any], int]:
        self.ws.close()
        self.ws = self._connect()
        return before, code


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    server = start_twistd(tmp_path_factory.mktemp("root"), "--sources", "")
    yield server
    stop_child_server(server)
    log = "".join(server.log)
    assert "Unhandled error" not in log, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def clients(child: ChildServer) -> Iterator[tuple[Fuzzer, Fuzzer]]:
    """
    The fuzzing connection and a witness that only ever sends good requests.
    """
    fuzzer = Fuzzer(*child.address)
    witness = Fuzzer(*child.address)
    witness.send_frame(TEXT, b'{"type": "subscribe", "channel": "witness", "id": "w"}')
    (ack,), code = witness.outcome()
    assert code is None
    assert ack["data"]["status"] == "subscribed"
    yield fuzzer, witness
    fuzzer.ws.close()
    witness.ws.close()


def check(clients: tuple[Fuzzer, Fuzzer], replies_expected: bool) -> None:
    """
    What every fuzzed frame must lead to: only well-formed responses (an
    error carries a snake_case code), or a documented close; and the
    witness is still answered.
    """
    fuzzer, witness = clients
    before, code = fuzzer.outcome()
    for message in before:
        assert message["type"] in ("response", "event"), message
        if "error" in message:
            assert message["code"].replace("_", "").isalpha(), message
            assert message["data"] == {"error": message["error"]}
    if code is not None:
        assert code in DOCUMENTED_CLOSES, code
    elif replies_expected:
        assert before, "no answer to the frame"
    assert witness.outcome() == ([], None)


@FUZZ
@given(value=json_values)
def test_random_json_values(clients: tuple[Fuzzer, Fuzzer], value: Any) -> None:
    """
    Any JSON value gets an answer or a documented close.
    """
    clients[0].send_frame(TEXT, json.dumps(value).encode())
    check(clients, replies_expected=not (isinstance(value, dict) and value.get("type") == "send"))


@FUZZ
@given(message=near_misses)
def test_requests_with_random_fields(clients: tuple[Fuzzer, Fuzzer], message: Any) -> None:
    """
    Requests of every type with random (mostly wrong) fields get an answer:
    an error, an acknowledgement or a result.
    """
    clients[0].send_frame(TEXT, json.dumps(message).encode())
    silent = message["type"] == "send" and "id" not in message
    check(clients, replies_expected=not silent)


@FUZZ
@given(payload=st.binary(max_size=300), binary=st.booleans())
def test_random_bytes(clients: tuple[Fuzzer, Fuzzer], payload: bytes, binary: bool) -> None:
    """
    Random bytes in a text frame (often invalid UTF-8, closed with 1007) or
    a binary frame (refused with an error) never hurt the server.
    """
    clients[0].send_frame(BINARY if binary else TEXT, payload)
    check(clients, replies_expected=True)


@FUZZ
@given(depth=st.integers(1, 30_000), kind=st.sampled_from(["[", '{"a":']))
def test_deep_nesting(clients: tuple[Fuzzer, Fuzzer], depth: int, kind: str) -> None:
    """
    Nesting deeper than the parser's recursion limit is an C{invalid_json}
    error, not a crash.
    """
    close = "]" if kind == "[" else "}"
    clients[0].send_frame(TEXT, (kind * depth + "1" + close * depth).encode())
    check(clients, replies_expected=True)


@FUZZ
@given(digits=st.integers(1, 20_000), where=st.sampled_from(["bare", "id", "data", "float"]))
def test_huge_numbers(clients: tuple[Fuzzer, Fuzzer], digits: int, where: str) -> None:
    """
    Huge integers and floats, bare or as a request id or payload, get an
    answer (an error where Python refuses to parse them).
    """
    number = "9" * digits + (".5e999" if where == "float" else "")
    text = {
        "bare": number,
        "float": number,
        "id": f'{{"type": "subscribe", "channel": "n", "id": {number}}}',
        "data": f'{{"type": "send", "channel": "n", "id": 1, "data": {number}}}',
    }[where]
    clients[0].send_frame(TEXT, text.encode())
    check(clients, replies_expected=True)


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=64))
def test_malformed_frames(clients: tuple[Fuzzer, Fuzzer], garbage: bytes) -> None:
    """
    Bytes that are not valid WebSocket frames (unmasked, reserved bits or
    opcodes, bad lengths) end that connection with a documented close or a
    drop, and nobody else notices.
    """
    fuzzer, witness = clients
    fuzzer.send_raw(garbage)
    with contextlib.suppress(OSError):
        fuzzer.ws.sock.shutdown(socket.SHUT_WR)
    try:
        while True:
            opcode, payload = fuzzer.ws.receive_frame()
            if opcode == CLOSE:
                if len(payload) >= 2:
                    assert struct.unpack("!H", payload[:2])[0] in DOCUMENTED_CLOSES | {1000}
                break
    except (EOFError, ConnectionError):
        pass
    fuzzer._reconnected([], 0)
    assert witness.outcome() == ([], None)
