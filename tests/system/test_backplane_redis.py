"""
Three C{twistd cluso} nodes sharing channels through a real C{redis-server}
that the tests start, kill and restart themselves.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.servers import ChildServer, python_tool, start_child_server, stop_child_server
from twisted.internet import reactor
from twisted.internet.task import deferLater

from cluso_router.testing import WebSocketTestClient, connect_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def command(self, *args: str) -> str:
        """
        One command in RESP; the first line of the reply.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
            s.sendall(request.encode())
            return s.recv(65536).split(b"\r\n")[0].decode()


def start_node(redis: RedisServer, root: Path, prefix: str) -> ChildServer:
    root.mkdir(exist_ok=True)
    return start_child_server(
        [
            python_tool("twistd"),
            "--pidfile=",
            "-n",
            "cluso",
            "--redis",
            redis.url,
            "--redis-prefix",
            prefix,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--sources",
            "",
            "--rate-limit",
            "0",
        ],
        cwd=root,
    )


def health(node: ChildServer) -> dict[str, Any]:
    with urllib.request.urlopen(node.url + "api/health", timeout=5) as response:
        data: dict[str, Any] = json.load(response)["data"]
        return data


def wait_status(nodes: list[ChildServer], status: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(health(node)["status"] == status for node in nodes):
            return
        time.sleep(0.1)
    raise AssertionError(f"nodes not {status}: {[health(n)['status'] for n in nodes]}")


def post(node: ChildServer, channel: str, data: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        node.url + f"api/events/{channel}",
        data=json.dumps(data).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[ChildServer]

    def ws(self, index: int) -> str:
        return "ws" + self.nodes[index].url[4:] + "ws"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """
    A Redis and three nodes sharing it, for the whole module.
    """
    redis = RedisServer(free_port())
    redis.start()
    base = tmp_path_factory.mktemp("cluster")
    nodes = [start_node(redis, base / f"node{i}", "test:") for i in range(3)]
    try:
        wait_status(nodes, "ok")
        yield Cluster(redis, nodes)
    finally:
        for node in nodes:
            stop_child_server(node)
        if redis.process is not None:
            redis.kill()


async def subscriber(url: str, channel: str, **extra: Any) -> tuple[WebSocketTestClient, Any]:
    client = await connect_client(url)
    await client.next_message()
    ack = await client.request({"type": "subscribe", "channel": channel, "id": 1, **extra})
    return client, ack["data"]


def events_of(client: WebSocketTestClient) -> list[dict[str, Any]]:
    return [m for m in client.queue.pending if m.get("type") == "event"]


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_events_from_every_node_reach_every_subscriber_once_in_order(
    cluster: Cluster,
) -> None:
    """
    10,000 events sent at once from clients of all three nodes: every
    subscriber, whatever its node, receives each event of its channel once,
    numbered 1..N, in the same order as every other subscriber.
    """
    channels = [f"load-{i}" for i in range(3)]
    subscribers: dict[str, list[WebSocketTestClient]] = {c: [] for c in channels}
    for channel in channels:
        for node in range(3):
            for _ in range(2):
                client, _ack = await subscriber(cluster.ws(node), channel)
                subscribers[channel].append(client)
    publishers = []
    for node in range(3):
        client = await connect_client(cluster.ws(node))
        await client.next_message()
        publishers.append(client)
    total = 10_000
    sent: dict[str, set[str]] = {c: set() for c in channels}
    for i in range(total):
        channel = channels[i % 3]
        tag = f"{i % 3}-{i}"
        sent[channel].add(tag)
        publishers[(i // 3) % 3].send_json(
            {"type": "send", "channel": channel, "data": {"tag": tag}}
        )
    per_channel = {c: len(sent[c]) for c in channels}
    await wait_until(
        lambda: all(
            len(events_of(client)) >= per_channel[c] for c in channels for client in subscribers[c]
        ),
        60,
        "every event at every subscriber",
    )
    await deferLater(reactor, 0.3, lambda: None)
    for channel in channels:
        orders = []
        for client in subscribers[channel]:
            received = events_of(client)
            assert [e["seq"] for e in received] == list(range(1, per_channel[channel] + 1))
            tags = [e["data"]["tag"] for e in received]
            assert set(tags) == sent[channel]
            assert len(tags) == len(sent[channel])
            orders.append(tags)
        assert all(order == orders[0] for order in orders)
    for publisher in publishers:
        assert not [m for m in publisher.queue.pending if m.get("type") == "error"]
    for client in [*publishers, *(c for cs in subscribers.values() for c in cs)]:
        client.close()


@pytest_twisted.ensureDeferred
async def test_client_moves_to_another_node_and_recovers(cluster: Cluster) -> None:
    """
    A client that was on node A and missed events reconnects to node B with
    C{since}: B replays exactly the missed events from Redis, then live
    delivery goes on without a repeat.
    """
    channel = "move"
    client, ack = await subscriber(cluster.ws(0), channel)
    for i in range(5):
        post(cluster.nodes[2], channel, {"n": i})
    await wait_until(lambda: len(events_of(client)) == 5, 10, "first events")
    last = events_of(client)[-1]["seq"]
    await client.close()
    for i in range(5, 12):
        post(cluster.nodes[2], channel, {"n": i})
    moved, ack2 = await subscriber(
        cluster.ws(1), channel, since={"seq": last, "epoch": ack["epoch"]}
    )
    assert ack2["recovered"] is True
    assert ack2["replayed"] == 7
    assert ack2["epoch"] == ack["epoch"]
    post(cluster.nodes[0], channel, {"n": 12})
    await wait_until(lambda: len(events_of(moved)) == 8, 10, "replay and live event")
    await deferLater(reactor, 0.2, lambda: None)
    assert [e["data"]["n"] for e in events_of(moved)] == list(range(5, 13))
    with urllib.request.urlopen(
        cluster.nodes[1].url + f"api/channels/{channel}/history?since=10", timeout=5
    ) as response:
        history = json.load(response)["data"]
    assert [e["data"]["n"] for e in history["events"]] == [10, 11, 12]
    assert history["recovered"] is True
    assert history["epoch"] == ack["epoch"]
    moved.close()


@pytest_twisted.ensureDeferred
async def test_dropped_subscriber_connection_is_replayed_from_the_stream(
    cluster: Cluster,
) -> None:
    """
    Redis closing the nodes' subscriber connections (as it does past
    C{client-output-buffer-limit pubsub}) between events: the nodes
    reconnect and replay from the Streams, so subscribers miss nothing.
    """
    channel = "dropped"
    clients = [(await subscriber(cluster.ws(i), channel))[0] for i in range(3)]
    for i in range(20):
        assert post(cluster.nodes[i % 3], channel, {"n": i})[0] == 200
    assert int(cluster.redis.command("CLIENT", "KILL", "TYPE", "pubsub")[1:]) == 3
    for i in range(20, 40):
        status, _ = post(cluster.nodes[i % 3], channel, {"n": i})
        while status == 503:
            await deferLater(reactor, 0.05, lambda: None)
            status, _ = post(cluster.nodes[i % 3], channel, {"n": i})
        assert status == 200
    await wait_until(lambda: all(len(events_of(c)) >= 40 for c in clients), 20, "replayed events")
    await deferLater(reactor, 0.2, lambda: None)
    for client in clients:
        assert [e["data"]["n"] for e in events_of(client)] == list(range(40))
        client.close()


@pytest_twisted.ensureDeferred
async def test_redis_restart_mid_stream(cluster: Cluster) -> None:
    """
    Redis killed while events flow and restarted empty: the nodes report
    degraded, refuse publishes with 503 meanwhile, reconnect by themselves,
    and every subscriber either received every accepted event or was
    closed with 4009 and, reconnecting with C{since}, is told
    C{recovered: false}.
    """
    channel = "restart"
    subs = [await subscriber(cluster.ws(i % 3), channel) for i in range(6)]
    accepted: list[int] = []
    refused = 0
    for i in range(30):
        status, body = post(cluster.nodes[i % 3], channel, {"n": i})
        assert status == 200, body
        accepted.append(i)
    await wait_until(lambda: all(len(events_of(c)) >= 30 for c, _ in subs), 10, "events")
    cluster.redis.kill()
    await deferLater(reactor, 0.3, lambda: None)
    assert [health(node)["status"] for node in cluster.nodes] == ["degraded"] * 3
    for i in range(30, 35):
        status, body = post(cluster.nodes[i % 3], channel, {"n": i})
        assert status == 503, body
        assert "Redis" in body["error"]
        refused += 1
    cluster.redis.start()
    wait_status(cluster.nodes, "ok")
    for i in range(35, 40):
        assert post(cluster.nodes[i % 3], channel, {"n": i})[0] == 200
        accepted.append(i)
    await wait_until(lambda: all(c.closed.called for c, _ in subs), 10, "gap closes")
    for client, ack in subs:
        _clean, code, _reason = await client.closed
        assert code == 4009
        received = [e["data"]["n"] for e in events_of(client)]
        assert received == accepted[: len(received)]
        last = events_of(client)[-1]["seq"]
        again, ack2 = await subscriber(
            cluster.ws(0), channel, since={"seq": last, "epoch": ack["epoch"]}
        )
        assert ack2["recovered"] is False
        assert ack2["epoch"] != ack["epoch"]
        again.close()
    assert refused == 5
    metrics = urllib.request.urlopen(cluster.nodes[0].url + "metrics", timeout=5).read().decode()
    assert "cluso_backplane_up 1.0" in metrics
    closes = [
        line for line in metrics.splitlines() if line.startswith("cluso_backplane_gap_closes_total")
    ]
    assert float(closes[0].split()[1]) >= 2


def test_node_starts_without_redis_and_connects_when_it_appears(tmp_path: Path) -> None:
    """
    A node whose Redis is not there yet starts anyway, serves local clients,
    says degraded (health and metrics) and refuses publishes with 503, then
    connects by itself once Redis is up.
    """
    redis = RedisServer(free_port())
    node = start_node(redis, tmp_path / "late", "late:")
    try:
        assert health(node)["status"] == "degraded"
        metrics = urllib.request.urlopen(node.url + "metrics", timeout=5).read().decode()
        assert "cluso_backplane_up 0.0" in metrics
        status, body = post(node, "late", {"n": 1})
        assert status == 503
        assert body["success"] is False
        redis.start()
        wait_status([node], "ok")
        status, body = post(node, "late", {"n": 2})
        assert status == 200
        assert body["data"]["delivered"] == 1
    finally:
        stop_child_server(node)
        if redis.process is not None:
            redis.kill()
