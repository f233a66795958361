"""
WAMP v2 on the C{/ws} endpoint (chosen by a C{wamp.2.<serializer>}
WebSocket subprotocol) and on a RawSocket endpoint.

Channels are WAMP topics of the same name and router procedures are WAMP
procedures, so JSON-dialect and WAMP clients see the same events and call
the same operations. See C{docs/wamp.md}.
"""

from cluso_router.ws.wamp.config import DEFAULT_REALM, WampConfig
from cluso_router.ws.wamp.handler import WampHandler, open_wamp
from cluso_router.ws.wamp.realm import WampRealm
from cluso_router.ws.wamp.serializers import SERIALIZERS, WampSerializer, by_subprotocol
from cluso_router.ws.wamp.session import WampSession
from cluso_router.ws.wamp.wire import RAWSOCKET, WEBSOCKET, Wire, wire

__all__ = [
    "DEFAULT_REALM",
    "RAWSOCKET",
    "SERIALIZERS",
    "WEBSOCKET",
    "WampConfig",
    "WampHandler",
    "WampRealm",
    "WampSerializer",
    "WampSession",
    "Wire",
    "by_subprotocol",
    "open_wamp",
    "wire",
]
