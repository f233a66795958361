"""
The file watcher behind the C{files} source: watchdog events, coalesced per
path into chokidar-style events, announced once through the file change
ledger.
"""

from cluso_router.sources.files.changes import ChangeTracker
from cluso_router.sources.files.ignore import IgnoreRules
from cluso_router.sources.files.service import FilesSource, FileWatcher, make_source

__all__ = ["ChangeTracker", "FileWatcher", "FilesSource", "IgnoreRules", "make_source"]
