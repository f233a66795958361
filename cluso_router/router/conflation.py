"""
Events that a newer one makes obsolete, so a client that is behind gets
only the latest of them.

A channel declares its events conflatable with a key function
(L{cluso_router.router.router.Router.conflate}): two events on the channel with
the same key say the same kind of thing, and only the newer one matters
(the diagnostics of one file, the progress of one search, the git status).
The router computes the key once per broadcast and marks the frame with it
(L{KeyedFrame}); a session only looks at the mark when it has to queue the
frame, so conflation costs nothing per subscriber while clients keep up.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

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


def diagnostics_key(data: Any) -> str | None:
    """
    The file a C{diagnostics} event is about: its C{file} field, or the one
    file all its diagnostics name. Events about several files, or about no
    named file, are never conflated.
    """
    if not isinstance(data, dict):
        return None
    file = data.get("file")
    if isinstance(file, str):
        return file
    diagnostics = data.get("diagnostics")
    if not isinstance(diagnostics, list) or not diagnostics:
        return None
    files = {d.get("file") if isinstance(d, dict) else None for d in diagnostics}
    if len(files) != 1:
        return None
    only = files.pop()
    return only if isinstance(only, str) else None


def search_key(data: Any) -> str | None:
    """
    The search a C{search} progress event belongs to (its C{searchId}), for
    events that carry no results: results arrive in batches and are never
    dropped, while a newer progress count replaces an older one.
    """
    if not isinstance(data, dict) or data.get("results"):
        return None
    search_id = data.get("searchId")
    return str(search_id) if isinstance(search_id, (str, int)) else None


def git_key(data: Any) -> str | None:
    """
    C{status} for git status events, the only git events a newer one
    replaces; commits, branch changes, pushes and pulls all reach the client.
    """
    if isinstance(data, dict) and data.get("type") == "status":
        return "status"
    return None


#: The built-in channels' conflation keys.
DEFAULT_CONFLATION: Final[Mapping[str, KeyFunction]] = {
    "diagnostics": diagnostics_key,
    "search": search_key,
    "git": git_key,
}
