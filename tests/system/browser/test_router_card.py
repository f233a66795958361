"""
The dashboard's Router card in Chromium against the real server: it shows
the server's connections, its channels with their subscribers and a live
sparkline of events and deliveries per second, from the router.stats
channel, and says so when a server sends no statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .support import Server
from .test_dashboard import open_dashboard, wait_in_page, wait_until


def test_router_card_shows_a_burst_as_it_happens(page: Any, launch: Callable[..., Server]) -> None:
    """
    With samples every 0.2 s, the card shows the page's own connection, the
    channels it subscribes to with their counts, and after a burst of 300
    events published in one batch a nonzero deliveries/s sample drawn in
    the sparkline; its counter counts samples.
    """
    server = launch(args=["--sources", "", "--stats-interval", "0.2"])
    open_dashboard(page, server)
    wait_until(lambda: server.subscribers("router.stats") >= 1, "the router.stats subscription")
    wait_in_page(page, "!document.getElementById('router-body').hidden")
    assert page.inner_text("#router-connections") == "1"
    assert "json 1" in page.inner_text("#router-dialects")
    table = page.inner_text("#router-table")
    assert "files" in table
    assert "router.stats" in table

    server.post("api/events/backup?batch=1", [{"type": "progress", "n": n} for n in range(300)])
    wait_in_page(
        page,
        "Number(document.getElementById('router-deliveries-rate').textContent.replace(/\\D/g, ''))"
        " > 0",
    )
    painted = page.evaluate(
        """(() => {
            const canvas = document.getElementById('router-deliveries-spark');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
            return pixels.data.some((value, i) => i % 4 === 3 && value > 0);
        })()"""
    )
    assert painted
    assert int(page.inner_text("#panel-router [data-count]").split()[0]) >= 2


def test_router_card_says_when_the_server_sends_no_statistics(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    A server started with --stats-interval 0 sends no samples: after a few
    seconds the card says so and how to turn them on, instead of waiting
    forever.
    """
    server = launch(args=["--sources", "", "--stats-interval", "0"])
    open_dashboard(page, server)
    wait_in_page(
        page,
        "document.getElementById('router-state').textContent.includes('No router statistics')",
    )
    assert "--stats-interval" in page.inner_text("#router-state")
    assert page.is_hidden("#router-body")
