"""
The adapter between Autobahn's WebSocket server and the router: the
handshake (access policy, connection limit, choice of dialect), then one
dialect handler per connection: the Cluso-compatible JSON dialect
(L{cluso_router.ws.json.handler}) or WAMP (L{cluso_router.ws.wamp}).

Each connection's L{Session} is registered with the L{Router} when it opens
and unregistered when it goes.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.server import NOT_DONE_YET

from cluso_router._version import __version__
from cluso_router.interfaces import IPublisher
from cluso_router.router.router import Router
from cluso_router.security import CLIENT_SUBPROTOCOL, AccessPolicy, RequestView
from cluso_router.ws.context import ConnectionContext
from cluso_router.ws.json import codec as messages
from cluso_router.ws.json.handler import JsonHandler
from cluso_router.ws.limits import Limits
from cluso_router.ws.session import Session
from cluso_router.ws.wamp import (
    DEFAULT_REALM,
    WEBSOCKET,
    WampRealm,
    WampSerializer,
    WampSession,
    by_subprotocol,
    open_wamp,
    wire,
)
from cluso_router.ws.wamp.config import WampConfig
from cluso_router.ws.wamp.serializers import SUBPROTOCOL_PREFIX, subprotocols

_HANDSHAKE_LEFTOVERS: Final = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_request_params",
    "http_status_line",
    "_wskey",
    "http_request_uri",
    "http_request_host",
    "http_request_path",
    "_transport_details",
    # txaio's event tables; the class-level defaults serve a protocol
    # nobody calls .on() on.
    "_results",
    "_valid_events",
)

#: Lists the handshake fills, mostly empty; an empty one each is 56 bytes
#: where a shared empty tuple is none.
_HANDSHAKE_LISTS: Final = (
    "websocket_protocols",
    "websocket_extensions",
    "websocket_extensions_in_use",
)


#: What Twisted and Autobahn set on every connection, held in slots: as an
#: instance dict these ~60 attributes cost 1.6 KiB per connection (CPython
#: shares an instance dict's keys only up to 30 of them); as slots, 8
#: bytes each.
_CONNECTION_STATE: Final = (
    "factory",
    "connected",
    "transport",
    "peer",
    "is_closed",
    "is_open",
    "_perMessageCompress",
    "trackedTimings",
    "trafficStats",
    "state",
    "send_state",
    "data",
    "triggered",
    "utf8validator",
    "wasMaxFramePayloadSizeExceeded",
    "wasMaxMessagePayloadSizeExceeded",
    "closedByMe",
    "failedByMe",
    "droppedByMe",
    "wasClean",
    "wasNotCleanReason",
    "wasServerConnectionDropTimeout",
    "wasOpenHandshakeTimeout",
    "wasCloseHandshakeTimeout",
    "wasServingFlashSocketPolicyFile",
    "localCloseCode",
    "localCloseReason",
    "remoteCloseCode",
    "remoteCloseReason",
    "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall",
    "autoPingTimeoutCall",
    "autoPingPending",
    "autoPingPendingCall",
    "autoPingPendingSeq",
    "autoPingPendingSent",
    "websocket_version",
    "websocket_protocols",
    "websocket_origin",
    "websocket_extensions",
    "websocket_protocol_in_use",
    "websocket_extensions_in_use",
    "inside_message",
    "current_frame",
    "current_frame_masker",
    "_isMessageCompressed",
    "utf8validateIncomingCurrentMessage",
    "utf8validateLast",
    "message_is_binary",
    "message_data",
    "message_data_total_length",
    "frame_length",
    "frame_data",
    "control_frame_data",
)

#: Autobahn's per-connection traffic counters, shared: nothing here reads
#: them per connection, and one each costs ~200 bytes.
_TRAFFIC: Final = TrafficStats()
#: A masked pong with an empty payload (the answer to the sweep's pings):
#: FIN + opcode 0xA, mask bit + length 0, then the 4-byte mask.
_EMPTY_PONG_HEADER: Final = b"\x8a\x80"
_EMPTY_PONG_LENGTH: Final = 6


def is_one_masked_frame(data: bytes) -> bool:
    """
    Whether C{data} is exactly one whole masked (client) frame: its header,
    mask and as many payload bytes as the header announces, nothing more.
    """
    if len(data) < 2:
        return False
    length = data[1] & 0x7F
    if length < 126:
        header = 6
    elif length == 126:
        header, length = 8, int.from_bytes(data[2:4], "big")
    else:
        header, length = 14, int.from_bytes(data[2:10], "big")
    return len(data) == header + length


class DialectHandler(Protocol):
    """
    What the protocol needs of a dialect's per-connection handler.
    """

    @property
    def session(self) -> Session: ...

    def received(self, payload: bytes, is_binary: bool) -> None: ...

    def admit_control(self) -> bool:
        """
        Count a control frame (ping, pong) against the connection's rate
        limit; C{False} when it must not be answered.
        """
        ...

    def closed(self) -> None: ...


class ClusoServerProtocol(WebSocketServerProtocol):
    """
    One client speaking the JSON dialect, or WAMP when it asked for a
    C{wamp.2.<serializer>} subprotocol this router has (then
    L{cluso_router.ws.wamp.WampHandler} does the talking).
    """

    __slots__ = (*_CONNECTION_STATE, "session", "_handler", "_wamp", "_wamp_authenticated")

    # Not "log": Autobahn's own txaio logger lives there and filters levels.
    _log = Logger()
    #: Autobahn queues only chopped or synchronous sends, which this
    #: protocol never makes; an empty tuple shared by all instances stands
    #: in for each one's empty deque (760 bytes), and fails loudly if used.
    send_queue: Any = ()
    factory: ClusoWebSocketFactory
    session: Session | None
    _handler: DialectHandler | None
    _wamp_authenticated: bool
    _wamp: WampSerializer | None

    def __init__(self) -> None:
        # A slot hides the class attribute of the same name: give the slots
        # whose names Twisted's and Autobahn's classes default their values.
        self.factory = None  # type: ignore[assignment]
        self.connected = 0
        self.transport = None
        self.peer = None
        self.session = None
        self._handler = None
        self._wamp = None
        self._wamp_authenticated = False
        super().__init__()

    def onConnect(self, request: ConnectionRequest) -> str | None:
        """
        Apply the access policy (for a factory used outside the bundled
        site, which checks HTTP requests first) and the connection limit,
        and pick WAMP with the first serializer the client offers that this
        router has. A WAMP client may leave the token out of the handshake:
        it authenticates in WAMP instead. One offering only WAMP
        serializers this router lacks is refused saying so. A browser
        client that sends its token as a subprotocol also offers
        C{cluso.v1}, the answer, so the token is never echoed back.
        """
        context = self.factory.context
        policy = context.policy
        offered = [p for p in request.protocols if p.startswith(SUBPROTOCOL_PREFIX)]
        serializer = next(filter(None, map(by_subprotocol, offered)), None)
        wamp = bool(offered)
        if policy is not None:
            local = self.transport.getHost() if self.transport is not None else None
            view = RequestView(
                method="GET",
                headers=request.headers,
                query_token=(request.params.get("token") or [None])[0],
                local_port=getattr(local, "port", 0),
                websocket=True,
            )
            refusal = policy.check(view, public=wamp)
            if refusal is not None:
                raise ConnectionDeny(refusal.status, refusal.message)
            self._wamp_authenticated = wamp and policy.authenticated(view)
        if wamp and serializer is None:
            context.router.refusals["subprotocol"] += 1
            raise ConnectionDeny(
                400,
                f"Bad Request: no WAMP serializer of {', '.join(offered)} is supported; "
                f"this router speaks {', '.join(subprotocols())}",
            )
        if context.router.connection_count >= context.limits.max_connections:
            context.router.refusals["capacity"] += 1
            raise ConnectionDeny(503, "Service Unavailable: too many connections")
        if serializer is not None and not context.realm.admits_unjoined():
            context.router.refusals["unjoined"] += 1
            raise ConnectionDeny(503, "Service Unavailable: too many WAMP connections joining")
        self._wamp = serializer
        if serializer is not None:
            return serializer.subprotocol
        return CLIENT_SUBPROTOCOL if CLIENT_SUBPROTOCOL in request.protocols else None

    def onOpen(self) -> None:
        self._forget_handshake()
        context = self.factory.context
        if self._wamp is not None:
            wamp_wire = wire(self._wamp, WEBSOCKET)
            wamp_session = WampSession(
                self,
                self.transport,
                wamp_wire.encoder,
                max_queue_bytes=context.limits.max_queue_bytes,
                counters=context.router.queue_counters,
                coalescer=context.router.writes,
            )
            self._handler = open_wamp(context, wamp_session, wamp_wire, self._wamp_authenticated)
        else:
            session = Session(
                self,
                self.transport,
                messages.JSON_ENCODER,
                max_queue_bytes=context.limits.max_queue_bytes,
                counters=context.router.queue_counters,
                coalescer=context.router.writes,
            )
            session.attach()
            handler = JsonHandler(context, session)
            self._handler = handler
            handler.opened()
        self.session = self._handler.session

    def _connectionMade(self) -> None:
        super()._connectionMade()
        self.trafficStats = _TRAFFIC

    def dataReceived(self, data: bytes) -> None:
        """
        Handle one read that holds several frames as one batch of writes
        (L{cluso_router.router.writes}): a publisher's burst costs each
        subscriber one send. A read that is exactly one frame has nothing
        to join, so its events leave at once, as a lone event does outside
        a batch: a broadcast to thousands then starts sending with its
        first subscriber instead of after gathering for the last one.
        (Autobahn's version also formats the arguments of a debug log line
        for every read, logged or not.)

        A read that is exactly one empty pong between frames, the answer
        every connection gives every ping sweep, skips the frame parser: at
        thousands of connections a sweep's answers arrive together, and
        their handling is what a sweep adds to the reactor's turns.
        """
        between_frames = (
            self.state == WebSocketProtocol.STATE_OPEN
            and self.current_frame is None
            and not self.data
        )
        if (
            between_frames
            and len(data) == _EMPTY_PONG_LENGTH
            and data.startswith(_EMPTY_PONG_HEADER)
        ):
            self.onPong(b"")
            return
        if between_frames and is_one_masked_frame(data):
            self._dataReceived(data)
            return
        with self.factory.context.router.writes.batch():
            self._dataReceived(data)

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        """
        Send what the session gathered before the close frame, whoever
        closes: nothing may follow a close frame on the wire.
        """
        if self.session is not None:
            self.session.flush()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def onFrameEnd(self) -> bool | None:
        """
        Let go of the frame's unmasker and control payload once it ended; a
        new frame gets its own, and an idle connection need not keep them.
        """
        ended = super().onFrameEnd()
        self.current_frame_masker = None
        self.control_frame_data = None  # type: ignore[assignment]
        return ended

    def onMessageEnd(self) -> None:
        """
        Autobahn's version also fires a C{message} event through txaio,
        a Deferred per message for listeners this protocol never has.
        """
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]

    def _forget_handshake(self) -> None:
        """
        Drop what Autobahn keeps of the opening handshake (raw request and
        response, headers); nothing reads it after the connection opened,
        and at thousands of idle connections it is a good part of their
        memory.
        """
        for name in _HANDSHAKE_LEFTOVERS:
            self.__dict__.pop(name, None)
        if not self.send_queue:
            del self.send_queue
        for name in _HANDSHAKE_LISTS:
            if not getattr(self, name, None):
                setattr(self, name, ())
        # The dict keeps its size after the pops; a new one is as small as
        # what is left.
        self.__dict__ = dict(self.__dict__)

    def onPing(self, payload: bytes) -> None:
        """
        Answer through the session (bounded, in order) once the dialect's
        rate limit admits the ping; Autobahn's own answer would go straight
        to the transport, unbounded.
        """
        session = self.session
        if session is None or self._handler is None:
            return
        session.heard = True
        if self._handler.admit_control():
            session.pong(payload)

    def onPong(self, payload: bytes) -> None:
        if self.session is not None and self._handler is not None:
            self.session.heard = True
            self._handler.admit_control()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._handler is not None:
            self._handler.received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.session = self.session, None
        if self._handler is not None:
            self._handler.closed()
        if session is not None:
            router = self.factory.context.router
            if self.closedByMe and self.localCloseCode is not None:
                router.closes[self.localCloseCode] += 1
            session.stopProducing()
            router.unregister_session(session)


class ClusoWebSocketFactory(WebSocketServerFactory):
    """
    Builds L{ClusoServerProtocol} instances bound to one router.

    C{publisher} is where client C{send}s go: the router itself, or a
    backplane in front of it. C{policy}, when given, is checked at every
    handshake (the bundled site checks it on the HTTP request already).
    C{wamp_realm} is a realm's name, or a realm shared with other endpoints
    (a RawSocket one).
    Per-message compression is not offered. A client that breaks the
    WebSocket protocol or a limit gets a close frame with the code saying
    why (1002, 1007, 1009) before the connection is dropped. WAMP clients
    join C{wamp_realm}.
    """

    protocol = ClusoServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        router: Router,
        publisher: IPublisher | None = None,
        limits: Limits | None = None,
        policy: AccessPolicy | None = None,
        wamp_realm: str | WampRealm = DEFAULT_REALM,
    ) -> None:
        super().__init__(server=f"cluso-router/{__version__}")
        limits = limits if limits is not None else Limits()
        publisher = publisher if publisher is not None else router
        realm = (
            WampRealm(router, publisher, WampConfig(realm=wamp_realm))
            if isinstance(wamp_realm, str)
            else wamp_realm
        )
        self.context = ConnectionContext(router, publisher, limits, policy, realm)
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            openHandshakeTimeout=limits.handshake_timeout,
            closeHandshakeTimeout=1,
            autoPingInterval=0,
            failByDrop=False,
        )

    def setProtocolOptions(self, **options: Any) -> None:  # type: ignore[override]
        """
        Set options as Autobahn does, then give them to a protocol class of
        this factory's own as class attributes: Autobahn copies each option
        onto every protocol instance unless the class already has it, which
        costs a few hundred bytes per connection.
        """
        super().setProtocolOptions(**options)
        base = ClusoServerProtocol
        values = {name: getattr(self, name) for name in base.CONFIG_ATTRS}
        self.protocol = type(  # type: ignore[assignment]
            base.__name__,
            (base,),
            {
                # A function option (perMessageCompressionAccept) must not
                # become a method of the class.
                name: staticmethod(value) if callable(value) else value
                for name, value in values.items()
            },
        )


class WebSocketUpgradeResource(WebSocketResource):
    """
    Autobahn's resource, letting go of the HTTP request it upgraded.

    The request never finishes: the connection now belongs to the
    WebSocket protocol. Left as it is, the channel's list of requests and
    the request's channel form a cycle that only the garbage collector
    frees; at thousands of connections opening, that garbage reaches the
    oldest generation and makes its (long) collections more frequent.
    Forgetting the request frees both as soon as the upgrade returns.
    """

    def render(self, request: Request) -> bytes | int:
        body: bytes | int = super().render(request)
        if body is NOT_DONE_YET:
            requests = getattr(request.channel, "requests", None)
            if requests is not None and request in requests:
                requests.remove(request)
        return body


def websocket_resource(
    router: Router,
    publisher: IPublisher | None = None,
    *,
    policy: AccessPolicy,
    **options: Any,
) -> WebSocketUpgradeResource:
    """
    A twisted.web resource that upgrades requests to a WebSocket on
    C{router} (the JSON dialect, or WAMP); put it at C{/ws} of any
    L{twisted.web.server.Site}.

    C{policy} decides who may connect, at every handshake. There is no
    default: a page on any site the developer visits could otherwise use
    the router. C{AccessPolicy(token)} wants the token and allows pages of
    the server's own origin (loopback, same port) and the origins it lists;
    C{AccessPolicy.insecure()} lets anything in, for tests.
    """
    if not isinstance(policy, AccessPolicy):
        raise TypeError(
            "websocket_resource needs an access policy: AccessPolicy(token), or "
            "AccessPolicy.insecure() for tests"
        )
    return WebSocketUpgradeResource(
        ClusoWebSocketFactory(router, publisher, policy=policy, **options)
    )
