"""
C{GET /metrics}: the router's numbers in the Prometheus text format, behind
the token unless C{--metrics-public}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from support.servers import TEST_TOKEN, start_service

from cluso_router.router.router import MAX_COUNTED_CHANNELS, OTHER_CHANNELS
from cluso_router.testing import connect_client


async def scrape(server: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """
    The metrics as C{{name: {labels: value}}} (labels as sorted tuples).
    """
    response = await treq.get(server.url + "metrics", headers=headers or server.headers)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families((await response.content()).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest_twisted.ensureDeferred
async def test_metrics_need_the_token(secured_server: Any) -> None:
    """
    Without the token, C{/metrics} is refused like any other route.
    """
    response = await treq.get(secured_server.url + "metrics")
    assert response.code == 401
    await response.content()


@pytest_twisted.ensureDeferred
async def test_metrics_follow_what_the_router_does(secured_server: Any) -> None:
    """
    Connections, subscriptions per channel, events published and delivered
    per channel, the fan-out histogram, refusals by reason, ping sweeps,
    queue bytes and the process's memory all show in one scrape.
    """
    service = secured_server.service
    first = await connect_client(secured_server.ws_url, headers=secured_server.headers)
    second = await connect_client(secured_server.ws_url, headers=secured_server.headers)
    for client, channels in ((first, ["alpha", "beta"]), (second, ["alpha"])):
        await client.next_message()
        for n, channel in enumerate(channels):
            await client.request({"type": "subscribe", "channel": channel, "id": n})
    for n in range(3):
        response = await treq.post(
            secured_server.url + "api/events/alpha",
            b'{"n": %d}' % n,
            headers=secured_server.headers,
        )
        assert response.code == 200
        await response.content()
    refused = await treq.get(secured_server.url + "api/health")
    await refused.content()
    await service.sweeper.sweep()

    metrics = await scrape(secured_server)
    await first.close()
    await second.close()

    assert metrics["cluso_connections"][()] == 2
    assert metrics["cluso_subscriptions"][(("channel", "alpha"),)] == 2
    assert metrics["cluso_subscriptions"][(("channel", "beta"),)] == 1
    assert metrics["cluso_events_published_total"][(("channel", "alpha"),)] == 3
    assert metrics["cluso_events_delivered_total"][(("channel", "alpha"),)] == 6
    assert metrics["cluso_fanout_seconds_count"][()] == 3
    assert metrics["cluso_fanout_seconds_bucket"][(("le", "+Inf"),)] == 3
    assert metrics["cluso_fanout_seconds_sum"][()] > 0
    assert metrics["cluso_refusals_total"][(("reason", "token"),)] >= 1
    assert metrics["cluso_ping_sweeps_total"][()] == 1
    assert metrics["cluso_ping_sweep_seconds"][()] >= 0
    assert 0 < metrics["cluso_ping_sweep_longest_slice_seconds"][()] < 1
    assert metrics["cluso_queue_bytes"][()] == 0
    assert metrics["cluso_slow_consumer_closes_total"][()] == 0
    assert metrics["process_resident_memory_bytes"][()] > 1_000_000


@pytest_twisted.ensureDeferred
async def test_channel_labels_are_bounded(server: Any) -> None:
    """
    Events on more distinct channels than are counted one by one are
    counted under one label, so clients inventing channel names cannot grow
    the server's counters or a scrape without bound.
    """
    router = server.service.router
    for n in range(MAX_COUNTED_CHANNELS + 100):
        router.publish(f"made-up-{n}", n)
    metrics = await scrape(server)
    published = metrics["cluso_events_published_total"]
    assert len(published) == MAX_COUNTED_CHANNELS + 1
    assert published[(("channel", OTHER_CHANNELS),)] >= 100
    assert sum(published.values()) >= MAX_COUNTED_CHANNELS + 100


@pytest_twisted.ensureDeferred
async def test_public_metrics_skip_only_the_token(tmp_path: Path) -> None:
    """
    With C{--metrics-public} a scraper needs no token for C{/metrics}; every
    other route still does, and the Host check still applies.
    """
    server = start_service(tmp_path, token=TEST_TOKEN, metrics_public=True)
    try:
        metrics = await scrape(server, headers={})
        assert metrics["cluso_connections"][()] == 0
        health = await treq.get(server.url + "api/health")
        assert health.code == 401
        await health.content()
        rebound = await treq.get(server.url + "metrics", headers={"Host": "attacker.example"})
        assert rebound.code == 403
        await rebound.content()
    finally:
        await server.service.stopService()
