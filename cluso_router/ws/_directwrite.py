"""
Write a frame to a TCP connection now, when nothing is waiting before it.

Twisted's C{transport.write} always buffers and registers the socket for
writing; the bytes leave on the next reactor pass, which then unregisters
the socket again. For a broadcast to thousands of idle subscribers that
bookkeeping dominates the cost. When a plain TCP transport has nothing
buffered, sending straight to the socket is indistinguishable on the wire
and keeps order; whatever the kernel does not take goes through the normal
buffered path behind it.

This relies on C{twisted.internet.abstract.FileDescriptor}'s buffer
attributes. L{supports_direct_write} checks them once per transport, so a
Twisted that changes them degrades to plain C{transport.write}, never to
reordered bytes.
"""

from __future__ import annotations

from errno import ENOBUFS
from typing import Any

from twisted.internet import tcp

_BUFFER_ATTRIBUTES = ("dataBuffer", "_tempDataLen", "socket", "connected", "disconnecting")


def supports_direct_write(transport: Any) -> bool:
    """
    C{True} for plain (non-TLS) TCP transports with the buffer layout
    L{write_frame} depends on.
    """
    return isinstance(transport, tcp.Connection) and all(
        hasattr(transport, name) for name in _BUFFER_ATTRIBUTES
    )


def buffered_bytes(transport: Any) -> int:
    """
    Bytes a Twisted transport holds that the kernel has not taken yet, or
    0 for transports that do not say.
    """
    try:
        return len(transport.dataBuffer) + transport._tempDataLen  # type: ignore[no-any-return]
    except (AttributeError, TypeError):
        return 0


def write_frame(transport: Any, frame: bytes, direct: bool) -> bool:
    """
    Send C{frame} on C{transport}, straight to the socket when C{direct} and
    nothing is buffered, else behind what is buffered.

    @return: C{False} if the socket reported the connection lost (Twisted
        notices the loss by itself on its next read), else C{True}.
    """
    if (
        direct
        and not transport.dataBuffer
        and not transport._tempDataLen
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            if e.errno != ENOBUFS:
                return False
            sent = 0
        if sent < len(frame):
            transport.write(frame[sent:])
        return True
    transport.write(frame)
    return True
