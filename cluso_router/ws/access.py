"""
Roles and what they may do: per-URI permissions (publish, subscribe, call,
register) by exact, prefix or wildcard rules, whether sessions of the role
are always identified, and their message rate. One L{Access} decides for
both dialects: a WAMP session by its authrole, a JSON-dialect connection by
the role of token holders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

ACTIONS: Final = ("publish", "subscribe", "call", "register")
MATCHES: Final = ("exact", "prefix", "wildcard")
DISCLOSURES: Final = ("caller", "publisher")
#: Decisions remembered before the cache starts over.
MAX_CACHED: Final = 10_000


@dataclass(frozen=True)
class Permission:
    """
    What a role may do on the URIs one rule matches.
    """

    uri: str
    match: str = "exact"
    allow: frozenset[str] = frozenset()

    def matches(self, uri: str) -> bool:
        if self.match == "exact":
            return uri == self.uri
        if self.match == "prefix":
            return uri.startswith(self.uri)
        wanted, given = self.uri.split("."), uri.split(".")
        return len(wanted) == len(given) and all(
            not w or w == g for w, g in zip(wanted, given, strict=True)
        )

    def rank(self) -> tuple[int, int]:
        """
        How specific the rule is: exact before prefix (longer first) before
        wildcard (more named components first).
        """
        if self.match == "exact":
            return (3, len(self.uri))
        if self.match == "prefix":
            return (2, len(self.uri))
        return (1, sum(1 for part in self.uri.split(".") if part))


@dataclass(frozen=True)
class Role:
    """
    A role: its permissions (C{None}: everything is allowed), which of its
    sessions' actions are always identified, and its message rate (C{None}:
    the server's C{--rate-limit}; 0: no limit).
    """

    name: str
    permissions: tuple[Permission, ...] | None = None
    disclose: frozenset[str] = frozenset()
    rate: float | None = None
    burst: int | None = None

    def allows(self, uri: str, action: str) -> bool:
        """
        Whether the most specific rule matching C{uri} allows C{action};
        nothing is allowed where no rule matches.
        """
        if self.permissions is None:
            return True
        matching = [p for p in self.permissions if p.matches(uri)]
        if not matching:
            return False
        return action in max(matching, key=Permission.rank).allow


#: The role of everyone when no roles are configured: full rights.
FULL_ACCESS: Final = Role("*")


@dataclass
class Access:
    """
    The roles of one server. Without configured roles everyone has full
    rights; with them, an unknown role has none, except the role of token
    holders (C{token_role}), which keeps full rights unless configured.
    """

    roles: Mapping[str, Role] | None = None
    token_role: str = "user"
    _cache: dict[tuple[str | None, str, str], bool] = field(default_factory=dict)

    def role(self, name: str | None) -> Role:
        if self.roles is None:
            return FULL_ACCESS
        found = self.roles.get(name or "")
        if found is not None:
            return found
        return FULL_ACCESS if name == self.token_role else Role(name or "", ())

    def allows(self, role: str | None, uri: str, action: str) -> bool:
        if self.roles is None:
            return True
        key = (role, uri, action)
        decision = self._cache.get(key)
        if decision is None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            decision = self._cache[key] = self.role(role).allows(uri, action)
        return decision

    def discloses(self, role: str | None, what: str) -> bool:
        return what in self.role(role).disclose
