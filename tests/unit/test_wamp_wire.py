"""
WAMP below the connection: each serializer's framing of events (once per
serializer and transport, whatever the number of subscribers), the
RawSocket handshake and frames, and serializers whose backend cannot be
imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.serializer import create_transport_serializer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluso_router.router.event import Extras
from cluso_router.router.router import Router
from cluso_router.testing import FakeSession
from cluso_router.ws.limits import Limits
from cluso_router.ws.wamp.rawsocket import RawSocketFactory, length_exponent
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.serializers import (
    AUTOBAHN_JSON_BATCHED,
    JSON,
    SERIALIZERS,
    answering,
)
from cluso_router.ws.wamp.wire import RAWSOCKET, WEBSOCKET, wire


def websocket_payload(frame: bytes) -> tuple[bool, bytes]:
    """
    Whether an unmasked server frame is binary, and its payload.
    """
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    return frame[0] & 0x0F == 2, frame[offset : offset + length]


@pytest.mark.parametrize("serializer_id", list(SERIALIZERS))
def test_events_on_every_wire_read_back_with_autobahn(serializer_id: str) -> None:
    """
    An event (a WAMP publisher's arguments, binary ones too, or a JSON
    value) framed for each serializer reads back with Autobahn's own
    serializer as the EVENT it should be, in text frames for JSON and
    binary ones otherwise. (For C{json.batched}, Autobahn reads only its
    own separator; the specification's is tested below.)
    """
    serializer = SERIALIZERS[serializer_id]
    if serializer_id == "json.batched":
        serializer = AUTOBAHN_JSON_BATCHED
    router = Router(clock=Clock())
    session = FakeSession(encoder=wire(serializer, WEBSOCKET).encoder)
    router.register_session(session)
    router.subscribe(session, "t")
    router.subscribe(session, "t.", "prefix")

    router.publish("t", {"a": 1})
    router.publish("t.x", {"args": [1], "kwargs": {}})
    router.publish("t", [b"\x00\xff"], Extras(args=[b"\x00\xff", 2], kwargs={"k": None}))

    autobahn = create_transport_serializer(serializer_id)
    events = []
    for frame in session.frames:
        binary, payload = websocket_payload(frame)
        assert binary is serializer.binary
        (event,) = autobahn.unserialize(payload, binary)
        events.append((event.args, event.kwargs, event.topic))
    assert events == [
        ([{"a": 1}], None, None),
        ([1], None, "t.x"),
        ([b"\x00\xff", 2], {"k": None}, None),
    ]


def test_one_encoding_per_wire_whatever_the_subscribers() -> None:
    """
    Subscribers on the same serializer and transport get the very same
    frame; each serializer and transport in use encodes the event once.
    """
    router = Router(clock=Clock())
    wires = [wire(SERIALIZERS[i], t) for i in ("json", "msgpack") for t in (WEBSOCKET, RAWSOCKET)]
    groups = [[FakeSession(encoder=w.encoder) for _ in range(3)] for w in wires]
    for session in (s for group in groups for s in group):
        router.register_session(session)
        router.subscribe(session, "t")

    router.publish("t", 1)

    frames = [{id(s.frames[0]) for s in group} for group in groups]
    assert [len(ids) for ids in frames] == [1, 1, 1, 1]
    assert len(set().union(*frames)) == 4


def test_json_batched_answers_with_the_separator_it_was_sent() -> None:
    """
    C{json.batched} reads messages separated by the specification's 0x1e
    or by Autobahn-Python's 0x18, and a peer is answered with the one it
    used.
    """
    spec = SERIALIZERS["json.batched"]

    assert spec.loads(b"[1]\x1e[2]\x1e") == [[1], [2]]
    assert spec.loads(b"[1]\x18[2]\x18") == [[1], [2]]
    assert spec.dumps([1]) == b"[1]\x1e"
    assert answering(spec, b"[1]\x18") is AUTOBAHN_JSON_BATCHED
    assert AUTOBAHN_JSON_BATCHED.dumps([1]) == b"[1]\x18"
    assert answering(spec, b"[1]\x1e") is spec
    assert answering(JSON, b"[1]") is JSON
    with pytest.raises(ValueError):
        spec.loads(b"[1]")


@pytest.mark.parametrize(
    ("max_bytes", "nibble"), [(1, 0), (512, 0), (65536, 7), (100_000, 7), (2**30, 15)]
)
def test_length_exponent(max_bytes: int, nibble: int) -> None:
    """
    The handshake names the largest power of two not above the limit,
    from 512 octets (0) to 16 MiB (15).
    """
    assert length_exponent(max_bytes) == nibble


def rawsocket(max_connections: int = 10) -> tuple[Any, StringTransport, Router]:
    router = Router(clock=Clock())
    factory = RawSocketFactory(
        router, WampRealm(router), limits=Limits(max_connections=max_connections)
    )
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, router


@pytest.mark.parametrize(
    ("handshake", "reply"),
    [
        (b"\x7f\xf0\x00\x00", b"\x7f\x10\x00\x00"),
        (b"\x7f\xf5\x00\x00", b"\x7f\x10\x00\x00"),
        (b"\x7f\xf1\x00\x01", b"\x7f\x30\x00\x00"),
    ],
)
def test_rawsocket_handshake_errors(handshake: bytes, reply: bytes) -> None:
    """
    An unknown serializer (0, or flatbuffers) and reserved bits get the
    specification's error reply, then the connection closes.
    """
    protocol, transport, router = rawsocket()

    protocol.dataReceived(handshake)

    assert transport.value() == reply
    assert transport.disconnecting
    assert router.connection_count == 0


def test_rawsocket_refuses_beyond_max_connections() -> None:
    """
    Beyond the connection limit a handshake gets error 4.
    """
    protocol, transport, router = rawsocket(max_connections=1)
    router.register_session(FakeSession())

    protocol.dataReceived(b"\x7f\xf2\x00\x00")

    assert transport.value() == b"\x7f\x40\x00\x00"


def test_rawsocket_handshake_ping_and_oversized_frames() -> None:
    """
    A handshake is answered with the serializer and the largest message
    this side takes (the default 64 KiB: nibble 7); a PING (even split
    across reads) is answered with a PONG of the same payload; a frame
    longer than announced drops the connection.
    """
    protocol, transport, router = rawsocket()

    protocol.dataReceived(b"\x7f\xf2\x00")
    protocol.dataReceived(b"\x00\x01\x00\x00")
    protocol.dataReceived(b"\x03abc")

    assert transport.value() == b"\x7f\x72\x00\x00" + b"\x02\x00\x00\x03abc"
    assert router.connection_count == 1
    protocol.dataReceived(b"\x00\x01\x00\x01")
    assert transport.disconnected


def test_a_broken_serializer_backend_disables_only_its_serializer(tmp_path: Path) -> None:
    """
    A serializer backend that raises something other than ImportError when
    imported (as bjdata built against another numpy does) disables that
    serializer with one log line; the others work and the router imports.
    """
    (tmp_path / "bjdata.py").write_text("raise AttributeError('_ARRAY_API not found')\n")
    script = textwrap.dedent(
        """
        from twisted.logger import globalLogPublisher
        lines = []
        def observe(event):
            if "disabled" in event.get("log_format", ""):
                lines.append(event)
        globalLogPublisher.addObserver(observe)
        import cluso_router.service
        from cluso_router.ws.wamp.serializers import SERIALIZERS
        print(sorted(SERIALIZERS), len(lines))
        """
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("] ")[1].strip() == "1"
    assert "'msgpack'" in result.stdout
    assert "'cbor'" in result.stdout
    assert "ubjson" not in result.stdout


def test_rawsocket_handshake_deadline_and_budget() -> None:
    """
    A connection that does not shake hands in time is dropped; one beyond
    the realm's budget of joining connections is dropped at once; the
    handshake ends a connection's turn in the budget.
    """
    protocol, transport, router = rawsocket()
    realm = protocol.factory.context.realm
    clock: Clock = router.clock  # type: ignore[assignment]
    realm.max_unjoined = 1
    waiting = realm.unjoined
    late = protocol.factory.buildProtocol(None)
    late_transport = StringTransport()
    late.makeConnection(late_transport)

    clock.advance(realm.hello_timeout)

    assert waiting == 1
    assert late_transport.disconnecting
    assert transport.disconnecting
    assert realm.unjoined == 0
