"""
The C{router.stats} channel and the reactor lag metrics of a real server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from support.servers import serve

from cluso_router.testing import connect_client


@pytest_twisted.ensureDeferred
async def test_a_subscriber_sees_a_burst_in_the_stats(tmp_path: Path) -> None:
    """
    A client subscribed to C{router.stats} gets a sample per interval; after
    a burst of 500 events to two subscribers, a sample counts them and
    shows a nonzero rate, and the channel cannot be published on by clients.
    """
    async for server in serve(tmp_path, auth="none", stats_interval=0.1):
        watcher = await connect_client(server.ws_url)
        await watcher.next_message()
        await watcher.request({"type": "subscribe", "channel": "router.stats", "id": 1})
        readers = []
        for _ in range(2):
            reader = await connect_client(server.ws_url)
            await reader.next_message()
            await reader.request({"type": "subscribe", "channel": "burst", "id": 1})
            readers.append(reader)

        answer = await treq.post(server.url + "api/events/burst?batch=1", json=list(range(500)))
        assert (await answer.json())["data"]["delivered"] == 1000

        busy: dict[str, Any] | None = None
        for _ in range(30):
            sample = (await watcher.next_message(timeout=5))["data"]
            if sample["deliveriesPerSecond"] > 0:
                busy = sample
                break
        assert busy is not None
        assert busy["connections"] == 3
        assert {"channel": "burst", "subscribers": 2} in busy["channels"]
        assert busy["delivered"] >= 1000
        assert busy["reactorLagMs"]["max"] >= busy["reactorLagMs"]["last"] >= 0

        refused = await watcher.request(
            {"type": "send", "channel": "router.stats", "data": {}, "id": 2}
        )
        assert "error" in refused
        for client in (watcher, *readers):
            await client.close()


@pytest_twisted.ensureDeferred
async def test_metrics_report_reactor_lag_and_joined_writes(server: Any) -> None:
    """
    C{/metrics} carries the reactor lag probe's last and worst lateness,
    and counts the frames that joined a burst's write.
    """
    reader = await connect_client(server.ws_url)
    await reader.next_message()
    await reader.request({"type": "subscribe", "channel": "burst", "id": 1})
    server.service.router.publish_many("burst", list(range(10)))
    for _ in range(10):
        await reader.next_message()
    text = (await (await treq.get(server.url + "metrics")).text()).splitlines()
    values = {line.split()[0]: float(line.split()[1]) for line in text if line[:1] != "#"}
    assert values["cluso_reactor_lag_seconds"] >= 0
    assert values["cluso_reactor_lag_max_seconds"] >= values["cluso_reactor_lag_seconds"]
    assert values["cluso_writes_joined_total"] >= 9
    await reader.close()
