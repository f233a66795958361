"""
The seams of cluso-router.

Each interface here has one default implementation in the library and one
in-memory fake in L{cluso_router.testing}; code on either side of a seam
depends on the interface, never on the other side's class.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface


class IFrameEncoder(Interface):
    """
    Turns an event into the bytes one wire dialect sends for it.

    The router asks each distinct encoder once per broadcast, so the cost of
    encoding and framing does not grow with the number of subscribers.
    """

    dialect = Attribute(
        "The name of the wire dialect (C{json}, C{wamp}, C{mcp}) its sessions "
        "are counted under in health and metrics."
    )
    per_subscription = Attribute(
        "C{True} when the frame names the subscription it is delivered for "
        "(as WAMP's EVENT does), so it is encoded once per subscription "
        "instead of once per broadcast."
    )

    def encode_event(event: Any, subscription: Any) -> bytes:
        """
        Return the complete wire frame for C{event} (an
        L{cluso_router.router.event.Event}) delivered through C{subscription} (an
        L{cluso_router.router.subscriptions.Subscription}).
        """


class ISession(Interface):
    """
    One client connection as the router sees it: an id, the channels it
    subscribed to, whether it was heard from lately, and a way to hand it a
    ready-made frame.
    """

    connection_id = Attribute("Opaque, unique id of this connection (C{str}).")
    channels = Attribute(
        "The channel names this session subscribed to (exact match), a C{tuple} in"
        " subscription order that the router replaces on each change: an idle"
        " session's one channel costs 56 bytes as a tuple, 216 as a set."
    )
    encoder = Attribute("The L{IFrameEncoder} of this session's wire dialect.")
    heard = Attribute("C{True} when anything (a message or a pong) arrived since the last sweep.")

    def deliver(frame: bytes) -> bool:
        """
        Queue or write C{frame}, keeping order with everything sent before.

        @return: C{False} when the frame could not be handed to the
            connection (it is closing or gone), else C{True}.
        """

    def ping() -> None:
        """
        Send a protocol-level ping.
        """

    def abort() -> None:
        """
        Drop the connection at once, without a closing handshake.
        """

    def close(code: int, reason: str) -> None:
        """
        Start a closing handshake with C{code} and C{reason}.
        """


class IPublisher(Interface):
    """
    Something events can be published through: the router itself, or a
    backplane that carries them to every node first.
    """

    def publish(channel: str, data: Any, extras: Any = None) -> Any:
        """
        Publish C{data} on C{channel}; return a delivery report (or a
        Deferred of it). C{extras} (an L{cluso_router.router.event.Extras})
        is what a WAMP publisher gave beyond C{data}.
        """

    def publish_many(channel: str, items: Any) -> Any:
        """
        Publish each of C{items} (a sequence of event data) on C{channel},
        in order, as one burst; return a list of delivery reports (or a
        Deferred of it). Nothing is published when any item is invalid.
        """


class IAudienceResolver(Interface):
    """
    Finds the sessions of this node a publication's
    L{cluso_router.router.event.Audience} names.
    """

    def resolve(audience: Any) -> Any:
        """
        Return C{(excluded, eligible)}: the sessions to leave out, and
        (C{None} for no limit) the only sessions to deliver to.
        """


class IBackplane(IPublisher):
    """
    What carries events between the nodes of one deployment and numbers
    them: the router itself on a lone node (everything answers at once), or
    a shared store such as Redis (everything answers with a Deferred).
    """

    synchronous = Attribute(
        "C{True} when C{publish}, C{position} and C{since} return their "
        "answer, C{False} when they return a Deferred of it."
    )
    backplane_status = Attribute(
        "C{ok}, or C{degraded} while the node cannot reach the other nodes."
    )

    def position(channel: str) -> Any:
        """
        The channel's L{cluso_router.router.history.Position} (or a Deferred of it).
        """

    def since(channel: str, seq: int, epoch: str) -> Any:
        """
        The L{cluso_router.router.history.Recovery} of what came after C{seq} in
        C{epoch} (or a Deferred of it).
        """


class IEventSourceFactory(Interface):
    """
    A Twisted plugin that adds one event source (a service publishing on
    the router) to C{twistd cluso}.

    Providers are module-level objects in the C{cluso_plugins} package,
    found with C{twisted.plugin.getPlugins(IEventSourceFactory, cluso_plugins)}.
    """

    name = Attribute("Short unique name used with C{--sources} (C{str}), e.g. C{files}.")
    description = Attribute("One line shown by C{--list-sources} (C{str}).")
    options = Attribute(
        "Options this source adds to C{twistd cluso}: a sequence of "
        "C{[long, short, default, help, coerce]} lists, as in "
        "C{twisted.python.usage.Options.optParameters}."
    )

    def applies_to(root: str) -> bool:
        """
        Whether the source is on by default for the workspace at C{root}.
        """

    def make_source(context: Any) -> Any:
        """
        Build the source's L{twisted.application.service.IService} from a
        L{cluso_router.sources.SourceContext}; the service is started and
        stopped as a child of the main service.
        """
