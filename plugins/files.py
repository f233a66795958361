"""
The C{files} source: file changes under the root, on the C{files} channel.
"""

from cluso_router.sources import SourcePlugin

files = SourcePlugin(
    name="files",
    description="File changes under the root (watchdog), on the files channel.",
    service="cluso_router.sources.files.make_source",
    options=[
        [
            "watch-delay",
            None,
            0.05,
            "Seconds a path must stay quiet before its change is published.",
            float,
        ],
    ],
)
