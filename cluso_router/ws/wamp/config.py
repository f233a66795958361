"""
The C{--wamp-config} file (TOML): the realm's name, how sessions
authenticate (the server token, anonymous, tickets, WAMP-CRA, cryptosign)
and the roles they get, with their permissions, disclosure and rate.

Read and checked once at start: a mistake (an unknown key, a role no
section defines, a malformed key) stops the server with a message saying
where. Secrets may be written as C{"${VARIABLE}"} to come from the
environment. See C{docs/wamp.md} for the format.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cluso_router.ws.access import ACTIONS, DISCLOSURES, MATCHES, Access, Permission, Role

DEFAULT_REALM: Final = "cluso"

_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")
_VARIABLE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """
    A C{--wamp-config} file the server cannot use.
    """


@dataclass(frozen=True)
class TicketPrincipal:
    ticket: str
    role: str


@dataclass(frozen=True)
class CraUser:
    """
    A WAMP-CRA user; with C{salt}, the key is derived from the secret with
    PBKDF2 (C{iterations}, C{keylen}) as Autobahn's C{derive_key} does.
    """

    secret: str
    role: str
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32


@dataclass(frozen=True)
class CryptosignPrincipal:
    #: Ed25519 public keys, as 64 hex digits (lower case).
    authorized_keys: frozenset[str]
    role: str


@dataclass(frozen=True)
class WampConfig:
    """
    Everything the file says; the defaults are what the server does
    without one.

    @ivar anonymous_role: the role of sessions that do not authenticate,
        or C{None} when they may not join (the default, unless the server
        runs with C{--auth none}).
    """

    realm: str = DEFAULT_REALM
    access: Access = field(default_factory=Access)
    anonymous_role: str | None = None
    tickets: Mapping[str, TicketPrincipal] = field(default_factory=dict)
    wampcra: Mapping[str, CraUser] = field(default_factory=dict)
    cryptosign: Mapping[str, CryptosignPrincipal] = field(default_factory=dict)

    @property
    def token_role(self) -> str:
        return self.access.token_role


def load_config(path: str | Path, environ: Mapping[str, str] = os.environ) -> WampConfig:
    """
    Read and check a C{--wamp-config} file.

    @raise ConfigError: saying what is wrong, and where.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not TOML: {e}") from None
    return parse_config(document, environ)


def parse_config(
    document: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> WampConfig:
    """
    A L{WampConfig} from a parsed document.

    @raise ConfigError: saying what is wrong, and where.
    """
    _keys(document, "the file", {"realm", "auth", "roles"})
    realm = _text(document.get("realm", DEFAULT_REALM), "realm")
    auth = _table(document.get("auth", {}), "auth")
    _keys(auth, "auth", {"token", "anonymous", "ticket", "wampcra", "cryptosign"})
    token = _table(auth.get("token", {}), "auth.token")
    _keys(token, "auth.token", {"role"})
    token_role = _text(token.get("role", "user"), "auth.token.role")
    anonymous_role = None
    if "anonymous" in auth:
        anonymous = _table(auth["anonymous"], "auth.anonymous")
        _keys(anonymous, "auth.anonymous", {"role"})
        anonymous_role = _text(anonymous.get("role", "anonymous"), "auth.anonymous.role")
    tickets = {
        authid: TicketPrincipal(
            _secret(entry.get("ticket"), f"{where}.ticket", environ),
            _text(entry.get("role"), f"{where}.role"),
        )
        for authid, entry, where in _principals(auth, "ticket", "principals", {"ticket", "role"})
    }
    wampcra = {
        authid: _cra_user(entry, where, environ)
        for authid, entry, where in _principals(
            auth, "wampcra", "users", {"secret", "role", "salt", "iterations", "keylen"}
        )
    }
    cryptosign = {
        authid: CryptosignPrincipal(
            _keys_of(entry.get("authorized_keys"), f"{where}.authorized_keys"),
            _text(entry.get("role"), f"{where}.role"),
        )
        for authid, entry, where in _principals(
            auth, "cryptosign", "principals", {"authorized_keys", "role"}
        )
    }
    roles = None
    if "roles" in document:
        roles = {
            name: _role(name, _table(entry, f"roles.{name}"))
            for name, entry in _table(document["roles"], "roles").items()
        }
        used = [
            ("auth.anonymous.role", anonymous_role),
            *((f"auth.ticket.principals.{a}.role", p.role) for a, p in tickets.items()),
            *((f"auth.wampcra.users.{a}.role", u.role) for a, u in wampcra.items()),
            *((f"auth.cryptosign.principals.{a}.role", p.role) for a, p in cryptosign.items()),
        ]
        for where, role in used:
            if role is not None and role not in roles and role != token_role:
                raise ConfigError(f"{where}: role {role!r} has no [roles.{role}] section")
    return WampConfig(
        realm=realm,
        access=Access(roles, token_role),
        anonymous_role=anonymous_role,
        tickets=tickets,
        wampcra=wampcra,
        cryptosign=cryptosign,
    )


def _principals(
    auth: Mapping[str, Any], method: str, section: str, allowed: set[str]
) -> list[tuple[str, Mapping[str, Any], str]]:
    if method not in auth:
        return []
    table = _table(auth[method], f"auth.{method}")
    _keys(table, f"auth.{method}", {section})
    found = []
    for authid, entry in _table(table.get(section, {}), f"auth.{method}.{section}").items():
        where = f"auth.{method}.{section}.{authid}"
        entry = _table(entry, where)
        _keys(entry, where, allowed)
        found.append((authid, entry, where))
    return found


def _cra_user(entry: Mapping[str, Any], where: str, environ: Mapping[str, str]) -> CraUser:
    salt = entry.get("salt")
    iterations = entry.get("iterations", 1000)
    keylen = entry.get("keylen", 32)
    for name, value in (("iterations", iterations), ("keylen", keylen)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}.{name} must be a positive integer")
    return CraUser(
        _secret(entry.get("secret"), f"{where}.secret", environ),
        _text(entry.get("role"), f"{where}.role"),
        None if salt is None else _text(salt, f"{where}.salt"),
        iterations,
        keylen,
    )


def _role(name: str, entry: Mapping[str, Any]) -> Role:
    where = f"roles.{name}"
    _keys(entry, where, {"permissions", "disclose", "rate_limit", "rate_burst"})
    rules = entry.get("permissions")
    if rules is not None and not isinstance(rules, list):
        raise ConfigError(
            f"{where}.permissions must be an array of tables ([[{where}.permissions]])"
        )
    permissions = tuple(
        _permission(_table(rule, f"{where}.permissions[{i}]"), f"{where}.permissions[{i}]")
        for i, rule in enumerate(rules or [])
    )
    rate = entry.get("rate_limit")
    if rate is not None and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0
    ):
        raise ConfigError(f"{where}.rate_limit must be a number of messages per second (0: none)")
    burst = entry.get("rate_burst")
    if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool) or burst < 1):
        raise ConfigError(f"{where}.rate_burst must be a positive integer")
    return Role(
        name,
        permissions,
        _flags(entry.get("disclose", []), f"{where}.disclose", DISCLOSURES),
        None if rate is None else float(rate),
        burst,
    )


def _permission(rule: Mapping[str, Any], where: str) -> Permission:
    _keys(rule, where, {"uri", "match", "allow"})
    uri = rule.get("uri")
    if not isinstance(uri, str):
        raise ConfigError(f"{where}.uri must be a string")
    match = rule.get("match", "exact")
    if match not in MATCHES:
        raise ConfigError(f"{where}.match must be one of {', '.join(MATCHES)}")
    return Permission(uri, match, _flags(rule.get("allow", []), f"{where}.allow", ACTIONS))


def _flags(value: Any, where: str, names: tuple[str, ...]) -> frozenset[str]:
    """
    A set of names given as an array (C{["call", "publish"]}) or, as
    Crossbar writes it, a table of booleans (C{{call = true}}).
    """
    if isinstance(value, dict):
        chosen = [name for name, on in value.items() if on is True]
        given = list(value)
    elif isinstance(value, list):
        chosen = given = value
    else:
        raise ConfigError(f"{where} must be an array of {', '.join(names)}")
    for name in given:
        if name not in names:
            raise ConfigError(f"{where}: {name!r} is not one of {', '.join(names)}")
    return frozenset(chosen)


def _keys_of(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be an array of Ed25519 public keys (64 hex digits)")
    for key in value:
        if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
            raise ConfigError(f"{where}: {key!r} is not an Ed25519 public key (64 hex digits)")
    return frozenset(key.lower() for key in value)


def _secret(value: Any, where: str, environ: Mapping[str, str]) -> str:
    text = _text(value, where)
    variable = _VARIABLE.fullmatch(text)
    if variable is None:
        return text
    found = environ.get(variable.group(1))
    if not found:
        raise ConfigError(f"{where}: environment variable {variable.group(1)} is not set")
    return found


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _keys(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(sorted(allowed))})"
        )
