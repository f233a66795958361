"""
Event sources: what a source plugin is given to build its service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import EventBroadcaster
from .filechanges import FileChangeLedger
from .router import Router


@dataclass(frozen=True)
class SourceContext:
    """
    Everything a source needs from the server it runs in.

    @ivar options: the values of this source's own options, by long name.
    """

    router: Router
    broadcaster: EventBroadcaster
    file_changes: FileChangeLedger
    root: str
    reactor: Any
    options: Mapping[str, Any] = field(default_factory=dict)
