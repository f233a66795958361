"""
The C{search} source: searches with progress on the C{search} channel, run
by ripgrep, or by the pure-Python C{cluso_grep} where no ripgrep is found.
"""

from cluso_router.sources import SourcePlugin
from cluso_router.sources.search.tools import engine_option

search = SourcePlugin(
    name="search",
    description="File content searches (search.start), progress on the search channel; "
    "ripgrep, else a slower pure-Python engine.",
    service="cluso_router.sources.search.service.make_source",
    options=[
        [
            "search-engine",
            None,
            "auto",
            "What runs searches: 'auto' (ripgrep beside Python or on PATH, else the "
            "pure-Python engine), 'ripgrep', 'python', or the path of an rg.",
            engine_option,
        ],
    ],
)
