"""
How a WAMP session proves who it is: the server token (in the WebSocket
handshake, or as a WAMP ticket), anonymous, tickets, WAMP-CRA and
cryptosign (Ed25519), as configured (L{cluso_router.ws.wamp.config}).

Each method answers a HELLO with a principal at once (anonymous, a token
already checked at the handshake), or with a CHALLENGE and what it needs to
check the AUTHENTICATE that follows. Every secret is compared in constant
time.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autobahn.wamp import auth as wamp_auth
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cluso_router._time import iso_timestamp
from cluso_router.security import AccessPolicy
from cluso_router.ws.wamp.config import WampConfig


@dataclass(frozen=True)
class Principal:
    """
    Who a session joined as.
    """

    authid: str
    authrole: str
    authmethod: str
    authprovider: str = "static"
    authextra: Mapping[str, Any] = field(default_factory=dict)


class AuthFailure(Exception):
    """
    A session that may not join: the ABORT's reason URI and message.
    """

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri
        self.message = message


@dataclass(frozen=True)
class Challenge:
    """
    A CHALLENGE to send, and what checking its answer needs.
    """

    method: str
    extra: Mapping[str, Any]
    authid: str
    expected: Any


@dataclass(frozen=True)
class Hello:
    """
    What authentication reads of a HELLO.
    """

    authmethods: tuple[str, ...]
    authid: str | None
    authextra: Mapping[str, Any]


def _denied(method: str) -> AuthFailure:
    return AuthFailure("wamp.error.authentication_failed", f"{method} authentication failed")


class Authenticator:
    """
    The authentication of one realm: the server's token policy and the
    C{--wamp-config} principals.
    """

    def __init__(self, config: WampConfig, policy: AccessPolicy | None) -> None:
        self.config = config
        self._policy = policy

    @property
    def _open(self) -> bool:
        """
        Whether the server runs without a token (C{--auth none}).
        """
        return self._policy is None or not self._policy.auth_required

    def offered(self) -> list[str]:
        """
        The methods this realm accepts.
        """
        config = self.config
        offered = []
        if config.tickets or not self._open:
            offered.append("ticket")
        if config.wampcra:
            offered.append("wampcra")
        if config.cryptosign:
            offered.append("cryptosign")
        if config.anonymous_role is not None or self._open:
            offered.append("anonymous")
        return offered

    def token_holder(self, authid: str | None, method: str = "token") -> Principal:
        """
        A session that showed the server token.
        """
        role = self.config.token_role
        return Principal(authid or role, role, method)

    def start(self, hello: Hello, session_id: int) -> Principal | Challenge:
        """
        Answer a HELLO: the first method the client lists (anonymous when it
        lists none) that this realm accepts.

        @raise AuthFailure: when none is.
        """
        wanted = hello.authmethods or ("anonymous",)
        offered = self.offered()
        for method in wanted:
            if method not in offered:
                continue
            if method == "anonymous":
                return self._anonymous(hello)
            if method == "ticket":
                return Challenge("ticket", {}, hello.authid or "", None)
            if method == "wampcra":
                return self._wampcra(hello, session_id)
            return self._cryptosign(hello)
        raise AuthFailure(
            "wamp.error.no_auth_method",
            f"cannot authenticate with any of {list(wanted)}; this router accepts {offered}",
        )

    def finish(self, challenge: Challenge, signature: str) -> Principal:
        """
        Check the AUTHENTICATE answering C{challenge}.

        @raise AuthFailure: when it does not prove the identity.
        """
        if challenge.method == "ticket":
            return self._ticket(challenge.authid or None, signature)
        if challenge.method == "wampcra":
            role, expected = challenge.expected
            if not hmac.compare_digest(signature.encode(), expected.encode()):
                raise _denied("wampcra")
            return Principal(challenge.authid, role, "wampcra")
        role, message, pubkey = challenge.expected
        if not _signed(pubkey, message, signature):
            raise _denied("cryptosign")
        return Principal(challenge.authid, role, "cryptosign")

    def _anonymous(self, hello: Hello) -> Principal:
        role = self.config.anonymous_role
        if role is None:
            role = "anonymous" if self.config.access.roles is None else self.config.token_role
        return Principal(hello.authid or f"anonymous-{secrets.token_hex(6)}", role, "anonymous")

    def _ticket(self, authid: str | None, ticket: str) -> Principal:
        principal = self.config.tickets.get(authid or "")
        if principal is not None:
            if hmac.compare_digest(ticket.encode(), principal.ticket.encode()):
                return Principal(authid or "", principal.role, "ticket")
            raise _denied("ticket")
        if self._policy is not None and self._policy.token_matches(ticket):
            return self.token_holder(authid, "ticket")
        raise _denied("ticket")

    def _wampcra(self, hello: Hello, session_id: int) -> Challenge:
        authid = hello.authid
        user = self.config.wampcra.get(authid or "")
        # An unknown user gets a challenge like any other, so the answer
        # does not tell which users exist; no answer can pass it.
        challenge = json.dumps(
            {
                "authid": authid,
                "authrole": user.role if user is not None else "",
                "authmethod": "wampcra",
                "authprovider": "static",
                "session": session_id,
                "nonce": secrets.token_urlsafe(48),
                "timestamp": iso_timestamp(time.time()),
            },
            ensure_ascii=False,
        )
        extra: dict[str, Any] = {"challenge": challenge}
        if user is None:
            return Challenge("wampcra", extra, authid or "", ("", secrets.token_hex(32)))
        key = user.secret.encode()
        if user.salt is not None:
            extra.update(salt=user.salt, iterations=user.iterations, keylen=user.keylen)
            key = wamp_auth.derive_key(user.secret, user.salt, user.iterations, user.keylen)
        expected = wamp_auth.compute_wcs(key, challenge.encode()).decode("ascii")
        return Challenge("wampcra", extra, authid or "", (user.role, expected))

    def _cryptosign(self, hello: Hello) -> Challenge:
        pubkey = hello.authextra.get("pubkey")
        if not isinstance(pubkey, str):
            raise AuthFailure(
                "wamp.error.invalid_argument", "cryptosign needs authextra.pubkey (64 hex digits)"
            )
        if hello.authextra.get("channel_binding") is not None:
            raise AuthFailure(
                "wamp.error.invalid_argument", "channel binding is not supported by this router"
            )
        pubkey = pubkey.lower()
        found = [
            (authid, principal)
            for authid, principal in self.config.cryptosign.items()
            if pubkey in principal.authorized_keys and (hello.authid in (None, authid))
        ]
        if not found:
            raise _denied("cryptosign")
        authid, principal = found[0]
        challenge = secrets.token_bytes(32)
        return Challenge(
            "cryptosign",
            {"challenge": challenge.hex(), "channel_binding": None},
            authid,
            (principal.role, challenge, pubkey),
        )


def _signed(pubkey: str, message: bytes, signature: str) -> bool:
    """
    Whether C{signature} (hex: the Ed25519 signature followed by the signed
    message) is C{pubkey}'s signature of C{message}.
    """
    try:
        raw = bytes.fromhex(signature)
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pubkey))
    except ValueError:
        return False
    if len(raw) != 64 + len(message) or not hmac.compare_digest(raw[64:], message):
        return False
    try:
        key.verify(raw[:64], message)
    except InvalidSignature:
        return False
    return True
