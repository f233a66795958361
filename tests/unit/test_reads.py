"""
What one inbound read (WebSocket or WAMP RawSocket) is to the write
coalescer: a read of several frames is one batch (each subscriber gets the
burst in one write), a read of exactly one frame is not (its event leaves
at once for each subscriber, with nothing gathered first).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from support.rawws import TEXT, frame, upgrade_request
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.testing import FakeSession
from cluso_router.ws.limits import Limits
from cluso_router.ws.protocol import ClusoWebSocketFactory, is_one_masked_frame
from cluso_router.ws.wamp.rawsocket import RawSocketFactory, is_one_frame
from cluso_router.ws.wamp.realm import WampRealm


class BatchWatchingSession(FakeSession):
    """
    A subscriber that notes, for each event, whether the router was
    gathering frames into a batch when the event reached it.
    """

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router
        self.in_batch: list[bool] = []

    def deliver(self, frame: bytes) -> bool:
        self.in_batch.append(self.router.writes.depth > 0)
        return super().deliver(frame)


def send(channel: str, data: Any) -> bytes:
    return frame(TEXT, json.dumps({"type": "send", "channel": channel, "data": data}).encode())


def opened_connection(router: Router) -> Any:
    factory = ClusoWebSocketFactory(router, policy=AccessPolicy.insecure())
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(upgrade_request("127.0.0.1", 8080))
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    return protocol


def test_a_read_of_one_frame_is_not_a_batch_and_a_read_of_two_is() -> None:
    """
    A publisher's frame that arrives alone reaches the subscriber outside
    any batch; two frames in one read reach it inside one; a frame split
    over two reads is completed inside a batch (the second read is not a
    whole frame on its own).
    """
    router = Router()
    subscriber = BatchWatchingSession(router)
    router.register_session(subscriber)
    router.subscribe(subscriber, "bench")
    publisher = opened_connection(router)

    publisher.dataReceived(send("bench", 1))
    publisher.dataReceived(send("bench", 2) + send("bench", 3))
    split = send("bench", 4)
    publisher.dataReceived(split[:5])
    publisher.dataReceived(split[5:])

    assert [e["data"] for e in subscriber.messages] == [1, 2, 3, 4]
    assert subscriber.in_batch == [False, True, True, True]


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (frame(TEXT, b""), True),
        (frame(TEXT, b"x" * 125), True),
        (frame(TEXT, b"x" * 126), True),
        (frame(TEXT, b"x" * 70_000), True),
        (frame(TEXT, b"x" * 10)[:-1], False),
        (frame(TEXT, b"x" * 10) + b"\x81", False),
        (frame(TEXT, b"x") + frame(TEXT, b"y"), False),
        (b"\x81\xfe\x00", False),
        (b"\x81\xff" + struct.pack("!Q", 2) + b"\x00\x00\x00\x00xx", True),
        (b"\x81\xff" + struct.pack("!Q", 2), False),
        (b"", False),
    ],
)
def test_one_masked_frame_is_recognised_by_its_length(data: bytes, whole: bool) -> None:
    """
    A read is one frame when its length is exactly the header's, the
    mask's and the announced payload's, for each of the three length forms.
    """
    assert is_one_masked_frame(data) is whole


def rawsocket_frame(message: list[Any]) -> bytes:
    payload = json.dumps(message).encode()
    return b"\x00" + len(payload).to_bytes(3, "big") + payload


def test_a_rawsocket_read_of_one_frame_is_not_a_batch_and_a_read_of_two_is() -> None:
    """
    The same over WAMP's RawSocket transport: a PUBLISH alone in its read
    reaches the subscriber outside any batch, two in one read inside one,
    and one split over two reads inside one.
    """
    router = Router()
    subscriber = BatchWatchingSession(router)
    router.register_session(subscriber)
    router.subscribe(subscriber, "bench")
    factory = RawSocketFactory(router, WampRealm(router), limits=Limits())
    publisher = factory.buildProtocol(None)
    transport = StringTransport()
    publisher.makeConnection(transport)
    publisher.dataReceived(b"\x7f\xf1\x00\x00")
    publisher.dataReceived(rawsocket_frame([1, "cluso", {"roles": {"publisher": {}}}]))
    assert b"[2," in transport.value(), transport.value()

    def publish(n: int) -> bytes:
        return rawsocket_frame([16, n, {}, "bench", [n]])

    publisher.dataReceived(publish(1))
    publisher.dataReceived(publish(2) + publish(3))
    split = publish(4)
    publisher.dataReceived(split[:7])
    publisher.dataReceived(split[7:])

    assert len(subscriber.frames) == 4
    assert subscriber.in_batch == [False, True, True, True]


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"\x00\x00\x00\x00", True),
        (b"\x00\x00\x00\x03abc", True),
        (b"\x00\x00\x00\x03ab", False),
        (b"\x00\x00\x00\x01a\x00", False),
        (b"\x08\x00\x00\x00", False),
        (b"\x00\x00", False),
    ],
)
def test_one_rawsocket_frame_is_recognised_by_its_length(data: bytes, whole: bool) -> None:
    """
    A RawSocket read is one frame when its length is exactly the header's
    and the announced payload's (with the 25th length bit in the type
    octet).
    """
    assert is_one_frame(data) is whole
