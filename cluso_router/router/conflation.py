"""
Events that a newer one makes obsolete, so a client that is behind gets
only the latest of them.

A channel declares its events conflatable with a key function, in its
claim (L{cluso_router.router.channels.ChannelSpec}) or with
L{cluso_router.router.router.Router.conflate}: two events on the channel
with the same key say the same kind of thing, and only the newer one
matters (the diagnostics of one file, the progress of one search, the git
status).
The router computes the key once per broadcast and marks the frame with it
(L{KeyedFrame}); a session only looks at the mark when it has to queue the
frame, so conflation costs nothing per subscriber while clients keep up.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

KeyFunction = Callable[[Any], Hashable | None]


class KeyedFrame(bytes):
    """
    A wire frame of a conflatable event: while queued, a newer frame with
    the same C{key} replaces it.

    @ivar channel: the event's channel.
    @ivar key: C{(channel, event key)}.
    """

    channel: str
    key: tuple[str, Hashable]


def keyed_frame(frame: bytes, channel: str, key: Hashable) -> KeyedFrame:
    keyed = KeyedFrame(frame)
    keyed.channel = channel
    keyed.key = (channel, key)
    return keyed
