"""
Subscription indexes, one per match policy, so finding who listens to a
channel costs the same with ten or ten thousand subscriptions.

Match policies follow WAMP: C{exact} names one channel; C{prefix} matches
every channel that starts with the pattern; C{wildcard} splits on C{.} and
an empty component matches any one component (C{build..done} matches
C{build.web.done} but not C{build.web.x.done}).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Final, Literal

from cluso_router.interfaces import ISession

Match = Literal["exact", "prefix", "wildcard"]
MATCHES: Final = ("exact", "prefix", "wildcard")

_ids = itertools.count(1)


class Subscription:
    """
    Everyone subscribed to one pattern under one match policy.

    Sessions subscribing to the same pattern and policy share it, so it has
    one id (what WAMP calls the subscription id).

    @ivar created: when it was created, as an ISO timestamp (or empty).
    """

    __slots__ = ("created", "id", "match", "pattern", "sessions")

    def __init__(self, pattern: str, match: Match, created: str = "") -> None:
        self.id = next(_ids)
        self.pattern = pattern
        self.match = match
        self.created = created
        self.sessions: set[ISession] = set()

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.match} {self.pattern!r} x{len(self.sessions)}>"


class ExactIndex:
    def __init__(self) -> None:
        self._by_channel: dict[str, Subscription] = {}

    def get(self, pattern: str) -> Subscription | None:
        return self._by_channel.get(pattern)

    def add(self, subscription: Subscription) -> None:
        self._by_channel[subscription.pattern] = subscription

    def remove(self, subscription: Subscription) -> None:
        del self._by_channel[subscription.pattern]

    def matching(self, channel: str) -> Iterator[Subscription]:
        subscription = self._by_channel.get(channel)
        if subscription is not None:
            yield subscription

    def __len__(self) -> int:
        return len(self._by_channel)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_channel.values())


class PrefixIndex:
    """
    Prefix patterns by pattern, plus how many patterns have each length: a
    lookup probes only the prefixes of the channel at those lengths.
    """

    def __init__(self) -> None:
        self._by_prefix: dict[str, Subscription] = {}
        self._lengths: Counter[int] = Counter()

    def get(self, pattern: str) -> Subscription | None:
        return self._by_prefix.get(pattern)

    def add(self, subscription: Subscription) -> None:
        self._by_prefix[subscription.pattern] = subscription
        self._lengths[len(subscription.pattern)] += 1

    def remove(self, subscription: Subscription) -> None:
        del self._by_prefix[subscription.pattern]
        length = len(subscription.pattern)
        self._lengths[length] -= 1
        if not self._lengths[length]:
            del self._lengths[length]

    def matching(self, channel: str) -> Iterator[Subscription]:
        size = len(channel)
        for length in self._lengths:
            if length <= size:
                subscription = self._by_prefix.get(channel[:length])
                if subscription is not None:
                    yield subscription

    def __len__(self) -> int:
        return len(self._by_prefix)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_prefix.values())


class _Node:
    __slots__ = ("children", "subscription")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscription: Subscription | None = None


class WildcardIndex:
    """
    A trie over dot-separated components; the empty component is the
    wildcard edge. A lookup follows, at each level, the channel's component
    and the wildcard edge.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def _path(self, pattern: str) -> list[str]:
        return pattern.split(".")

    def get(self, pattern: str) -> Subscription | None:
        node: _Node | None = self._root
        for component in self._path(pattern):
            node = node.children.get(component) if node else None
        return node.subscription if node else None

    def add(self, subscription: Subscription) -> None:
        node = self._root
        for component in self._path(subscription.pattern):
            node = node.children.setdefault(component, _Node())
        node.subscription = subscription
        self._count += 1

    def remove(self, subscription: Subscription) -> None:
        trail = [self._root]
        components = self._path(subscription.pattern)
        for component in components:
            trail.append(trail[-1].children[component])
        trail[-1].subscription = None
        for depth in range(len(components), 0, -1):
            node = trail[depth]
            if node.children or node.subscription is not None:
                break
            del trail[depth - 1].children[components[depth - 1]]
        self._count -= 1

    def matching(self, channel: str) -> Iterator[Subscription]:
        components = channel.split(".")
        frontier = [self._root]
        for component in components:
            following: list[_Node] = []
            for node in frontier:
                exact = node.children.get(component)
                if exact is not None:
                    following.append(exact)
                if component:
                    wildcard = node.children.get("")
                    if wildcard is not None:
                        following.append(wildcard)
            if not following:
                return
            frontier = following
        for node in frontier:
            if node.subscription is not None:
                yield node.subscription

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Subscription]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.subscription is not None:
                yield node.subscription
            stack.extend(node.children.values())
