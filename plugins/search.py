"""
The C{search} source: ripgrep searches with progress on the C{search} channel.
"""

from cluso_router.sources import SourcePlugin

search = SourcePlugin(
    name="search",
    description="Searches with ripgrep, progress on the search channel (search.start).",
    service="cluso_router.sources.search.service.make_source",
)
