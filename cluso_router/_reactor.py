from __future__ import annotations

from typing import Any


def default_reactor() -> Any:
    """
    The global reactor, imported only when no reactor or clock was given, so
    that importing this library never installs one.
    """
    from twisted.internet import reactor

    return reactor
