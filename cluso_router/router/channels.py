"""
Channels the server publishes on, claimed by the parts that publish there.

A claim makes a channel server-owned (clients may subscribe but not
C{send} on it), may declare its events conflatable (see
L{cluso_router.router.conflation}) and describes its payload for the
AsyncAPI document. Built-in and third-party event sources claim their
channels the same way, through their L{cluso_router.sources.SourceContext};
the core keeps no list of its own.

Several parts may claim one channel (the workspace API and the git source
both publish on C{git}) as long as they declare the same conflation key;
the channel stays claimed until the last of them releases it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cluso_router.router.conflation import KeyFunction
from cluso_router.router.observers import Observers

MAX_CHANNEL_LENGTH: Final = 255


def channel_problem(channel: Any) -> str | None:
    """
    Why C{channel} cannot name a channel, or C{None} when it can: a
    non-empty string of at most L{MAX_CHANNEL_LENGTH} characters without
    control characters or lone surrogates (every name must survive JSON,
    UTF-8, Redis keys and metric labels).
    """
    if not isinstance(channel, str) or not channel:
        return "channel must be a non-empty string"
    if len(channel) > MAX_CHANNEL_LENGTH:
        return f"channel is longer than {MAX_CHANNEL_LENGTH} characters"
    for c in channel:
        code = ord(c)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return "channel contains control characters"
        if 0xD800 <= code <= 0xDFFF:
            return "channel contains a lone UTF-16 surrogate"
    return None


class ChannelTaken(ValueError):
    """
    A claim that contradicts an earlier claim of the same channel.
    """


@dataclass(frozen=True)
class ChannelSpec:
    """
    What a part declares about a channel it publishes on.

    @ivar description: one line for documentation and the AsyncAPI document.
    @ivar conflate: the events' conflation key function, if they conflate.
    @ivar schema: JSON Schema of the events' C{data}, if known.
    @ivar examples: example C{data} values that follow C{schema}.
    """

    channel: str
    description: str = ""
    conflate: KeyFunction | None = None
    schema: Mapping[str, Any] | None = None
    examples: tuple[Any, ...] = field(default=())


@dataclass(frozen=True, eq=False)
class ChannelClaim:
    """
    One part's claim of one channel; C{owner} is a source's name, or
    C{workspace} for the files and git API.
    """

    spec: ChannelSpec
    owner: str

    @property
    def channel(self) -> str:
        return self.spec.channel


class ChannelRegistry:
    """
    The claims of one router, and the conflation keys they and embedding
    code (L{set_key}) declared.

    @ivar changes: told whenever a channel becomes claimed or unclaimed.
    """

    def __init__(self) -> None:
        self._claims: dict[str, list[ChannelClaim]] = {}
        self._keys: dict[str, KeyFunction] = {}
        self.changes = Observers()

    def claim(self, spec: ChannelSpec, owner: str) -> ChannelClaim:
        """
        Claim C{spec.channel} for C{owner}.

        @raise ChannelTaken: an earlier claim declared another conflation key.
        """
        channel = spec.channel
        claims = self._claims.get(channel, [])
        for earlier in claims:
            if earlier.spec.conflate is not spec.conflate:
                raise ChannelTaken(
                    f"channel {channel!r} is claimed by {earlier.owner} with another "
                    f"conflation key than {owner}'s"
                )
        claim = ChannelClaim(spec, owner)
        self._claims.setdefault(channel, []).append(claim)
        if spec.conflate is not None:
            self._keys[channel] = spec.conflate
        if not claims:
            self.changes.notify()
        return claim

    def release(self, claim: ChannelClaim) -> None:
        """
        Withdraw C{claim}; idempotent.
        """
        claims = self._claims.get(claim.channel)
        if claims is None or claim not in claims:
            return
        claims.remove(claim)
        if not claims:
            del self._claims[claim.channel]
            if claim.spec.conflate is not None:
                self._keys.pop(claim.channel, None)
            self.changes.notify()

    def is_claimed(self, channel: str) -> bool:
        return channel in self._claims

    def claims(self, channel: str) -> tuple[ChannelClaim, ...]:
        return tuple(self._claims.get(channel, ()))

    def specs(self) -> list[ChannelSpec]:
        """
        One spec per claimed channel (the first claim's), by channel name.
        """
        return [self._claims[channel][0].spec for channel in sorted(self._claims)]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._claims))

    def key_function(self, channel: str) -> KeyFunction | None:
        return self._keys.get(channel)

    def set_key(self, channel: str, key: KeyFunction | None) -> None:
        """
        Declare (or with C{None} withdraw) the conflation key of a channel
        nobody claims; a claimed channel's key is its claim's.
        """
        if channel in self._claims:
            raise ChannelTaken(f"channel {channel!r} is claimed; its claim sets its key")
        if key is None:
            self._keys.pop(channel, None)
        else:
            self._keys[channel] = key
