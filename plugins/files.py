"""
The C{files} source: file changes under the root, on the C{files} channel.
"""

from cluso_router.sources import SourceOptions, SourcePlugin


class FilesOptions(SourceOptions):
    optParameters = [
        [
            "watch-delay",
            None,
            0.05,
            "Seconds a path must stay quiet before its change is published.",
            float,
        ],
    ]
    aliases = {"watch-delay": "watch-delay"}


files = SourcePlugin(
    name="files",
    description="File changes under the root (watchdog), on the files channel.",
    service="cluso_router.sources.files.make_source",
    options=FilesOptions,
)
