"""
WAMP v2 (Basic Profile, JSON serialization) on the same C{/ws} endpoint as
the JSON dialect, chosen by the C{wamp.2.json} WebSocket subprotocol.

Channels are WAMP topics of the same name and router procedures are WAMP
procedures, so JSON-dialect and WAMP clients see the same events and call
the same operations. See C{docs/protocol.md}.
"""

from cluso_router.ws.wamp.codec import SUBPROTOCOL, WAMP_ENCODER, WampEventEncoder
from cluso_router.ws.wamp.handler import WampHandler, open_wamp
from cluso_router.ws.wamp.realm import DEFAULT_REALM, WampRealm, WampSession

__all__ = [
    "DEFAULT_REALM",
    "SUBPROTOCOL",
    "WAMP_ENCODER",
    "WampEventEncoder",
    "WampHandler",
    "WampRealm",
    "WampSession",
    "open_wamp",
]
