"""
The file watcher behind the C{files} source: watchdog events, coalesced per
path into chokidar-style events, announced once through the file change
ledger.
"""

from .changes import ChangeTracker
from .ignore import IgnoreRules
from .service import FileWatcher, make_source

__all__ = ["ChangeTracker", "FileWatcher", "IgnoreRules", "make_source"]
