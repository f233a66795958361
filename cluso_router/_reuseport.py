"""
Listening on a TCP port several processes share (C{SO_REUSEPORT}): the
kernel spreads new connections over the processes listening on it, so
each runs its own reactor on its own core.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer


def reuse_port_socket(family: int, interface: str, port: int) -> socket.socket:
    """
    A non-blocking stream socket bound to C{(interface, port)} with
    C{SO_REUSEPORT}, not yet listening.

    @raise CannotListenError: when the address cannot be bound (taken by a
        process that does not share it, or not an address of this host).
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((interface, port))
    except OSError as e:
        sock.close()
        raise CannotListenError(interface, port, e) from None
    return sock


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    A TCP server endpoint whose port other processes may listen on too.
    """

    def __init__(
        self, reactor: Any, family: int, interface: str, port: int, backlog: int = 50
    ) -> None:
        self.reactor = reactor
        self.family = family
        self.interface = interface
        self.port = port
        self.backlog = backlog

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return maybeDeferred(self._listen, factory)

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        sock = reuse_port_socket(self.family, self.interface, self.port)
        try:
            sock.listen(self.backlog)
            # The reactor takes a duplicate of the descriptor.
            port: IListeningPort = self.reactor.adoptStreamPort(sock.fileno(), self.family, factory)
        finally:
            sock.close()
        return port


def reuse_port_endpoint(reactor: Any, description: str) -> ReusePortEndpoint:
    """
    The L{ReusePortEndpoint} of a C{tcp:} or C{tcp6:} endpoint description.

    @raise ValueError: for any other kind of endpoint.
    """
    parsed = serverFromString(reactor, description)
    if isinstance(parsed, TCP6ServerEndpoint):
        family = socket.AF_INET6
    elif isinstance(parsed, TCP4ServerEndpoint):
        family = socket.AF_INET
    else:
        raise ValueError(
            f"a port shared by several processes needs a tcp: --listen address, not {description!r}"
        )
    return ReusePortEndpoint(
        reactor,
        family,
        parsed._interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
        parsed._port,
        parsed._backlog,
    )
