"""
WAMP authentication and authorization below the wire: the C{--wamp-config}
file, roles and their permissions, each authentication method, and the
deadline and budget of connections that have not joined.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from autobahn.wamp import auth as wamp_auth
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluso_router.router.router import Router
from cluso_router.security import AccessPolicy
from cluso_router.ws.access import MAX_CACHED, Access, Permission, Role
from cluso_router.ws.context import ConnectionContext
from cluso_router.ws.limits import Limits
from cluso_router.ws.wamp.auth import Authenticator, AuthFailure, Challenge, Hello, Principal
from cluso_router.ws.wamp.config import ConfigError, parse_config
from cluso_router.ws.wamp.handler import open_wamp
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.serializers import JSON
from cluso_router.ws.wamp.session import WampSession
from cluso_router.ws.wamp.wire import WEBSOCKET, wire

TOKEN = "server-token-0123456789"
PRIVATE = Ed25519PrivateKey.generate()
PUBLIC = PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

CONFIG: dict[str, Any] = {
    "realm": "app",
    "auth": {
        "token": {"role": "admin"},
        "anonymous": {"role": "guest"},
        "ticket": {"principals": {"svc": {"ticket": "${SVC_TICKET}", "role": "backend"}}},
        "wampcra": {
            "users": {
                "bob": {"secret": "pw", "role": "backend"},
                "salty": {
                    "secret": "pw2",
                    "role": "guest",
                    "salt": "salt123",
                    "iterations": 100,
                    "keylen": 32,
                },
            }
        },
        "cryptosign": {"principals": {"carol": {"authorized_keys": [PUBLIC], "role": "backend"}}},
    },
    "roles": {
        "backend": {
            "rate_limit": 0,
            "disclose": ["caller"],
            "permissions": [
                {
                    "uri": "",
                    "match": "prefix",
                    "allow": ["publish", "subscribe", "call", "register"],
                }
            ],
        },
        "guest": {
            "rate_limit": 5,
            "permissions": [
                {"uri": "app.", "match": "prefix", "allow": {"subscribe": True, "call": True}},
                {"uri": "app.private.", "match": "prefix", "allow": []},
                {"uri": "app..admin", "match": "wildcard", "allow": ["call"]},
                {"uri": "app.private.ok", "allow": ["subscribe"]},
            ],
        },
    },
}


def config(**changes: Any) -> Any:
    document = json.loads(json.dumps(CONFIG))
    document.update(changes)
    return parse_config(document, {"SVC_TICKET": "svc-secret"})


def test_config_reads_every_section() -> None:
    """
    A full file gives the realm, each method's principals (a secret from
    the environment), the roles with their rules, disclosure and rates.
    """
    parsed = config()

    assert parsed.realm == "app"
    assert (parsed.token_role, parsed.anonymous_role) == ("admin", "guest")
    assert parsed.tickets["svc"].ticket == "svc-secret"
    assert parsed.wampcra["salty"].salt == "salt123"
    assert parsed.cryptosign["carol"].authorized_keys == {PUBLIC}
    backend = parsed.access.role("backend")
    assert (backend.rate, backend.disclose) == (0.0, frozenset({"caller"}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"realms": []}, "unknown key 'realms'"),
        ({"auth": {"anonymous": {"role": "nobody"}}, "roles": {}}, "role 'nobody' has no"),
        ({"auth": {"ticket": {"principals": {"x": {"ticket": "${NOPE}", "role": "a"}}}}}, "NOPE"),
        (
            {
                "auth": {
                    "cryptosign": {"principals": {"x": {"authorized_keys": ["zz"], "role": "a"}}}
                }
            },
            "not an Ed25519 public key",
        ),
        ({"roles": {"r": {"permissions": [{"uri": "a", "allow": ["fly"]}]}}}, "'fly' is not"),
        ({"roles": {"r": {"permissions": [{"uri": "a", "match": "regex"}]}}}, "match must be"),
        ({"roles": {"r": {"rate_limit": -1}}}, "rate_limit"),
        (
            {"auth": {"wampcra": {"users": {"u": {"secret": "s", "role": "r", "keylen": 0}}}}},
            "keylen",
        ),
    ],
)
def test_config_mistakes_are_refused(change: dict[str, Any], message: str) -> None:
    """
    Each mistake stops the server with a message naming where it is.
    """
    with pytest.raises(ConfigError, match=message):
        parse_config({**change}, {})


def test_roles_and_rules() -> None:
    """
    The most specific matching rule decides (exact, then the longest
    prefix, then the wildcard); no rule means no; the role of token holders
    keeps full rights unless configured, any other unknown role has none.
    """
    access = config().access

    assert access.allows("guest", "app.x", "subscribe")
    assert not access.allows("guest", "app.x", "publish")
    assert not access.allows("guest", "app.private.x", "subscribe")
    assert access.allows("guest", "app.private.ok", "subscribe")
    assert access.allows("guest", "app.x.admin", "call")
    assert not access.allows("guest", "other", "subscribe")
    assert access.allows("admin", "anything", "register")
    assert not access.allows("stranger", "app.x", "subscribe")
    assert Access().allows("anyone", "x", "publish")


def test_decision_cache_is_bounded() -> None:
    """
    Decisions are cached up to L{MAX_CACHED}, then the cache starts over.
    """
    access = Access({"r": Role("r", (Permission("", "prefix", frozenset({"call"})),))})

    for n in range(MAX_CACHED + 5):
        assert access.allows("r", f"p.{n}", "call")

    assert len(access._cache) == 5


POLICY = AccessPolicy(TOKEN)


def authenticator() -> Authenticator:
    return Authenticator(config(), POLICY)


def test_methods_offered_and_chosen() -> None:
    """
    The client's first method the realm accepts is used; a HELLO without
    methods is anonymous; none accepted gets C{no_auth_method}.
    """
    auth = authenticator()

    assert auth.offered() == ["ticket", "wampcra", "cryptosign", "anonymous"]
    assert isinstance(auth.start(Hello((), None, {}), 1), Principal)
    assert auth.start(Hello(("scram", "ticket"), "svc", {}), 1).method == "ticket"  # type: ignore[union-attr]
    with pytest.raises(AuthFailure) as refused:
        Authenticator(parse_config({}, {}), AccessPolicy(TOKEN)).start(Hello((), None, {}), 1)
    assert refused.value.uri == "wamp.error.no_auth_method"


def test_tickets() -> None:
    """
    A principal's ticket gives its role; the server token gives the token
    role; anything else fails.
    """
    auth = authenticator()
    principal = auth.finish(Challenge("ticket", {}, "svc", None), "svc-secret")
    token = auth.finish(Challenge("ticket", {}, "", None), TOKEN)

    assert (principal.authid, principal.authrole, principal.authmethod) == (
        "svc",
        "backend",
        "ticket",
    )
    assert (token.authrole, token.authmethod) == ("admin", "ticket")
    for authid, ticket in (("svc", TOKEN), ("", "guess")):
        with pytest.raises(AuthFailure):
            auth.finish(Challenge("ticket", {}, authid, None), ticket)


@pytest.mark.parametrize("authid", ["bob", "salty"])
def test_wampcra(authid: str) -> None:
    """
    The CHALLENGE is a JSON string (with salt, iterations and key length for
    a salted user); Autobahn's signature of it passes, another fails; an
    unknown user gets a challenge no answer passes.
    """
    auth = authenticator()
    challenge = auth.start(Hello(("wampcra",), authid, {}), 42)
    assert isinstance(challenge, Challenge)
    extra = challenge.extra
    user = config().wampcra[authid]
    key = (
        wamp_auth.derive_key(user.secret, extra["salt"], extra["iterations"], extra["keylen"])
        if "salt" in extra
        else user.secret.encode()
    )
    signature = wamp_auth.compute_wcs(key, extra["challenge"].encode()).decode()

    principal = auth.finish(challenge, signature)

    assert json.loads(extra["challenge"])["session"] == 42
    assert (principal.authid, principal.authrole) == (authid, user.role)
    with pytest.raises(AuthFailure):
        auth.finish(
            challenge, wamp_auth.compute_wcs(b"wrong", extra["challenge"].encode()).decode()
        )
    unknown = auth.start(Hello(("wampcra",), "nobody", {}), 1)
    with pytest.raises(AuthFailure):
        auth.finish(unknown, "")  # type: ignore[arg-type]


def test_cryptosign() -> None:
    """
    A key listed for a principal signs the 32-byte challenge (the authid
    may be left out); a tampered message, another key, an unlisted key and
    channel binding all fail.
    """
    auth = authenticator()
    challenge = auth.start(Hello(("cryptosign",), None, {"pubkey": PUBLIC}), 1)
    assert isinstance(challenge, Challenge)
    message = bytes.fromhex(challenge.extra["challenge"])

    principal = auth.finish(challenge, (PRIVATE.sign(message) + message).hex())

    assert (principal.authid, principal.authrole) == ("carol", "backend")
    other = Ed25519PrivateKey.generate()
    for signature in (
        (PRIVATE.sign(message) + bytes(32)).hex(),
        (other.sign(message) + message).hex(),
        "not hex",
    ):
        with pytest.raises(AuthFailure):
            auth.finish(challenge, signature)
    stranger = other.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    for authextra in ({"pubkey": stranger}, {"pubkey": PUBLIC, "channel_binding": "tls-unique"}):
        with pytest.raises(AuthFailure):
            auth.start(Hello(("cryptosign",), None, authextra), 1)


class Connection:
    def __init__(self) -> None:
        self.closed: list[Any] = []

    def sendPing(self, payload: bytes | None = None) -> None:
        pass

    def sendCloseFrame(
        self, code: Any = None, reasonUtf8: Any = None, isReply: Any = False
    ) -> None:
        self.closed.append(code)

    def dropConnection(self, abort: bool = False) -> None:
        pass


def test_joining_deadline_and_budget() -> None:
    """
    A connection that has not joined within the realm's deadline is aborted
    and closed; connections joining at once are counted against the realm's
    budget, which refuses more once full.
    """
    clock = Clock()
    router = Router(clock=clock)
    realm = WampRealm(router, config=config())
    realm.max_unjoined = 2
    context = ConnectionContext(router, router, Limits(), AccessPolicy(TOKEN), realm)
    connections = []
    for _ in range(2):
        connection = Connection()
        session = WampSession(connection, StringTransport(), wire(JSON, WEBSOCKET).encoder)
        open_wamp(context, session, wire(JSON, WEBSOCKET), False)
        connections.append(connection)

    full = not realm.admits_unjoined()
    clock.advance(realm.hello_timeout)

    assert full
    assert [c.closed for c in connections] == [[1000], [1000]]
    assert realm.unjoined == 0
    assert realm.admits_unjoined()
