"""
The Redis backplane while Redis cannot be reached: degraded, refusing
publishes, and retrying on the injected clock with backoff.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from zope.interface import implementer

from cluso_router.backplane.redis import (
    BackplaneUnavailable,
    RedisAddress,
    RedisBackplane,
    retry_delays,
)
from cluso_router.router.router import Router


@implementer(IStreamClientEndpoint)
class RefusingEndpoint:
    """
    An endpoint whose every connection attempt is refused, noting when.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.attempts: list[float] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts.append(self.clock.seconds())
        return fail(ConnectionRefusedError())


def test_unreachable_redis_is_retried_with_backoff_on_the_clock() -> None:
    """
    Both connections are attempted at start and again after 0.5, 1, 2, 4,
    8 and then at most 10 seconds; meanwhile the node is degraded and a
    publish fails with backplane_unavailable. Stopping ends the attempts.
    """
    clock = Clock()
    endpoint = RefusingEndpoint(clock)
    backplane = RedisBackplane(
        Router(clock=clock),
        RedisAddress(),
        clock=clock,
        endpoint=endpoint,
        retry_policy=retry_delays(0.5, 10.0, jitter=lambda: 0.0),
    )
    backplane.startService()
    for _ in range(200):
        clock.advance(0.25)
    # Two connections, attempted at the same moments.
    assert endpoint.attempts[::2] == endpoint.attempts[1::2]
    assert endpoint.attempts[::2] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 25.5, 35.5, 45.5]
    assert backplane.backplane_status == "degraded"
    failures: list[Any] = []
    backplane.publish("build", {"ok": True}).addErrback(failures.append)
    assert failures[0].check(BackplaneUnavailable)
    assert failures[0].value.code == "backplane_unavailable"
    backplane.stopService()
    made = len(endpoint.attempts)
    clock.advance(60)
    assert len(endpoint.attempts) == made


def test_an_invalid_event_is_refused_before_redis_is_asked() -> None:
    """
    A publish whose data is not strict JSON fails at once, as on a lone
    node, whether or not Redis is reachable.
    """
    clock = Clock()
    backplane = RedisBackplane(
        Router(clock=clock), RedisAddress(), clock=clock, endpoint=RefusingEndpoint(clock)
    )
    failures: list[Any] = []
    backplane.publish("build", float("nan")).addErrback(failures.append)
    assert failures[0].value.code == "invalid_event"
    with pytest.raises(Exception, match="not valid JSON"):
        failures[0].raiseException()
