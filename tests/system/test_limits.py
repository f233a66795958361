"""
The limits one client is held to, against the real server in a child
process: message size, subscriptions, message rate, connections and the
opening handshake. The rate limiter's arithmetic is checked on a fake clock.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from support.rawws import RawWebSocket
from support.servers import ChildServer, rss_bytes, start_twistd, stop_child_server
from twisted.internet.task import Clock

from cluso_router.ws.limits import Admission, Limits, MessageRateLimiter, TokenBucket


def serve(tmp_path_factory: pytest.TempPathFactory, *options: str) -> ChildServer:
    return start_twistd(tmp_path_factory.mktemp("root"), "--sources", "", *options)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    """
    A server with the default limits.
    """
    child = serve(tmp_path_factory)
    yield child
    stop_child_server(child)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    """
    A server with small limits, so each is reached quickly.
    """
    child = serve(
        tmp_path_factory,
        "--rate-limit",
        "20",
        "--rate-burst",
        "10",
        "--max-connections",
        "3",
        "--handshake-timeout",
        "1",
    )
    yield child
    stop_child_server(child)


def connect(child: ChildServer) -> RawWebSocket:
    ws = RawWebSocket(*child.address)
    assert ws.receive_json()["data"]["status"] == "connected"
    return ws


def wait_until_idle(child: ChildServer) -> None:
    """
    Wait until connections of earlier tests are gone.
    """
    deadline = time.monotonic() + 10
    while child.health()["connections"]:
        assert time.monotonic() < deadline, "connections of earlier tests linger"
        time.sleep(0.05)


def test_message_over_64_kib_closes_with_1009(default_server: ChildServer) -> None:
    """
    A 65 KiB message closes the connection with 1009 (message too big); a
    64 KiB one is still read (and answered).
    """
    ws = connect(default_server)
    ws.send_json({"type": "send", "channel": "big", "id": 1, "data": "x" * (64 * 1024 - 80)})
    assert ws.receive_json()["data"]["status"] == "sent"
    ws.send_json({"type": "send", "channel": "big", "data": "x" * (65 * 1024)})
    assert ws.until_close()[1] == 1009
    ws.close()


def test_subscribe_storm_hits_the_limit_and_memory_stays_flat(default_server: ChildServer) -> None:
    """
    Connections subscribing to thousands of new channels each hold 128
    subscriptions and get C{too_many_subscriptions} for the rest; repeating
    the storm three more times does not grow the server's memory.
    """
    clients = [connect(default_server) for _ in range(10)]
    rounds: list[int] = []
    try:
        for storm in range(4):
            for n, ws in enumerate(clients):
                frames = [
                    {"type": "subscribe", "channel": f"storm-{storm}-{n}-{i}", "id": i}
                    for i in range(500)
                ]
                for frame in frames:
                    ws.send_json(frame)
                replies = [ws.receive_json() for _ in frames]
                refused = [r for r in replies if r.get("code") == "too_many_subscriptions"]
                expected_refusals = 500 - 128 if storm == 0 else 500
                assert len(refused) == expected_refusals
                assert refused[0]["error"] == "a connection may hold at most 128 subscriptions"
            rounds.append(rss_bytes(default_server.process.pid))
        info = default_server.health()
        assert sum(info["channels"].values()) == 10 * 128
        assert max(info["channels"].values()) == 1
    finally:
        for ws in clients:
            ws.close()
    assert rounds[-1] - rounds[0] < 2 * 1024 * 1024, rounds


def test_rate_limiter_refuses_then_closes(strict_server: ChildServer) -> None:
    """
    Past its burst, a connection's messages get C{rate_limited} (with their
    id) and are dropped; kept up far above the rate, it is closed with 1008.
    A connection within its rate is never refused.
    """
    calm = connect(strict_server)
    for i in range(5):
        calm.send_json({"type": "subscribe", "channel": "calm", "id": i})
        assert calm.receive_json()["data"]["status"] == "subscribed"
        time.sleep(0.06)

    flood = connect(strict_server)
    for i in range(100):
        flood.send_json({"type": "subscribe", "channel": "flood", "id": i})
    replies, code = flood.until_close()
    flood.close()
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert code == 1008
    assert 5 <= len([r for r in replies if "error" not in r]) <= 40
    assert len(limited) >= 5
    assert all(isinstance(r["id"], int) for r in limited)
    calm.send_json({"type": "unsubscribe", "channel": "calm", "id": 99})
    assert calm.receive_json()["data"]["status"] == "unsubscribed"
    calm.close()


def test_connections_above_the_maximum_get_503(strict_server: ChildServer) -> None:
    """
    Past --max-connections the handshake is refused with HTTP 503; once a
    connection closes, a new one is accepted.
    """
    wait_until_idle(strict_server)
    open_ = [connect(strict_server) for _ in range(3)]
    try:
        with pytest.raises(ConnectionError, match="503"):
            RawWebSocket(*strict_server.address)
        open_.pop().close()
        deadline = time.monotonic() + 5
        while True:
            try:
                open_.append(connect(strict_server))
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "no connection accepted after one closed"
                time.sleep(0.05)
    finally:
        for ws in open_:
            ws.close()


def test_unfinished_handshake_is_dropped(strict_server: ChildServer) -> None:
    """
    A client that starts the opening handshake and never finishes it is
    disconnected after --handshake-timeout.
    """
    with socket.create_connection(strict_server.address, timeout=10) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < 5


def test_token_bucket_and_rate_limiter_on_a_clock() -> None:
    """
    The bucket refills at the rate up to the burst; the limiter accepts
    within the rate, refuses above it, and says close once a second burst
    of excess is spent faster than it refills.
    """
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert bucket.take()
    assert not bucket.take()
    clock.advance(10)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]

    limiter = MessageRateLimiter(rate=10, burst=5, clock=clock)
    admissions = [limiter.admit() for _ in range(11)]
    assert admissions == [Admission.ACCEPT] * 5 + [Admission.REFUSE] * 5 + [Admission.CLOSE]
    clock.advance(1)
    assert limiter.admit() is Admission.ACCEPT


def test_limits_must_be_positive() -> None:
    """
    Limits refuse zero or negative values, except a message rate of 0,
    which turns rate limiting off.
    """
    assert Limits(message_rate=0).message_rate == 0
    with pytest.raises(ValueError, match="max-subscriptions must be positive"):
        Limits(max_subscriptions=0)
    with pytest.raises(ValueError, match="handshake-timeout"):
        Limits(handshake_timeout=-1)
