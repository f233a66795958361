"""
Backplanes: how the nodes of one deployment share channels.

A lone node is its own backplane (L{memory_backplane}: the router numbers
and delivers at once). With C{--redis}, L{RedisBackplane} numbers each event
in Redis, keeps the channel's history there and delivers it on every node
as it comes back over Redis pub/sub.
"""

from cluso_router.backplane.memory import memory_backplane
from cluso_router.backplane.redis import BackplaneUnavailable, RedisAddress, RedisBackplane

__all__ = ["BackplaneUnavailable", "RedisAddress", "RedisBackplane", "memory_backplane"]
