"""
Autobahn-Python WAMP clients for tests: joined over WebSocket (any
serializer, batched ones too) or RawSocket, anonymously or with ticket,
WAMP-CRA or cryptosign authentication, and left again at the end.

Cryptosign is signed here with the C{cryptography} package (Autobahn's own
client side of it needs PyNaCl).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autobahn.twisted.wamp import ApplicationRunner, ApplicationSession
from autobahn.wamp import auth
from autobahn.wamp.serializer import create_transport_serializer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import reactor
from twisted.internet.defer import Deferred

TIMEOUT = 10.0


def within(d: Deferred[Any], timeout: float = TIMEOUT) -> Deferred[Any]:
    return d.addTimeout(timeout, reactor)


@dataclass
class Credentials:
    """
    How a client authenticates: C{method} (C{ticket}, C{wampcra},
    C{cryptosign}), its C{authid}, and the secret (the ticket, the CRA
    secret, or the Ed25519 private key as 64 hex digits).
    """

    method: str
    authid: str | None
    secret: str
    authextra: dict[str, Any] = field(default_factory=dict)

    def hello(self) -> dict[str, Any]:
        extra = dict(self.authextra)
        if self.method == "cryptosign":
            extra["pubkey"] = public_key(self.secret)
        return {"authmethods": [self.method], "authid": self.authid, "authextra": extra or None}

    def answer(self, challenge: Any) -> str:
        if self.method == "ticket":
            return self.secret
        if self.method == "wampcra":
            extra = challenge.extra
            key = self.secret.encode()
            if "salt" in extra:
                key = auth.derive_key(
                    self.secret, extra["salt"], extra["iterations"], extra["keylen"]
                )
            return auth.compute_wcs(key, extra["challenge"].encode()).decode("ascii")
        message = bytes.fromhex(challenge.extra["challenge"])
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.secret))
        return (key.sign(message) + message).hex()


def public_key(private_hex: str) -> str:
    """
    The Ed25519 public key, as 64 hex digits, of a private key in hex.
    """
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


class Client:
    """
    One joined session; C{left} fires with the details when it leaves.
    """

    def __init__(self, session: ApplicationSession, details: Any, left: Deferred[Any]) -> None:
        self.session = session
        self.details = details
        self.left = left

    @property
    def id(self) -> int:
        return int(self.session._session_id)


class Clients:
    """
    Joins clients and leaves (or drops) them all at the end of a test.
    """

    def __init__(self) -> None:
        self.joined: list[Client] = []

    async def join(
        self,
        url: str,
        realm: str = "cluso",
        serializer: str = "json",
        credentials: Credentials | None = None,
        headers: dict[str, str] | None = None,
    ) -> Client:
        """
        A client joined to C{realm} at C{url} (C{ws://} or C{rs://}).

        @raise Exception: the reason joining failed (an ABORT's
            C{ApplicationError}, a refused connection).
        """
        opened: Deferred[tuple[ApplicationSession, Any]] = Deferred()
        left: Deferred[Any] = Deferred()

        class Session(ApplicationSession):
            def onConnect(self) -> None:
                self.join(self.config.realm, **(credentials.hello() if credentials else {}))

            def onChallenge(self, challenge: Any) -> str:
                assert credentials is not None
                return credentials.answer(challenge)

            def onJoin(self, details: Any) -> None:
                if not opened.called:
                    opened.callback((self, details))

            def onLeave(self, details: Any) -> None:
                if not opened.called:
                    opened.errback(Exception(f"{details.reason}: {details.message}"))
                if not left.called:
                    left.callback(details)
                super().onLeave(details)

            def onDisconnect(self) -> None:
                if not opened.called:
                    opened.errback(ConnectionError("disconnected before joining"))

        runner = ApplicationRunner(
            url, realm, headers=headers, serializers=[create_transport_serializer(serializer)]
        )

        def failed(failure: Any) -> None:
            if not opened.called:
                opened.errback(failure)

        runner.run(Session, start_reactor=False, auto_reconnect=False).addErrback(failed)
        session, details = await within(opened)
        client = Client(session, details, left)
        self.joined.append(client)
        return client

    async def close(self) -> None:
        for client in self.joined:
            if client.session.is_attached():
                client.session.leave()
                try:
                    await within(client.left)
                except Exception:
                    client.session._transport.close()
