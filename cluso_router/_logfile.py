"""
Log files only their owner can read.

The start log holds the sign-in URL, so a log file readable by other
users hands them the token. twistd opens its C{--logfile} (C{twistd.log}
when it runs as a daemon) with the mode the umask gives, usually C{0644},
and so do the files it rotates to. L{twistd_log_file} says which file
twistd would write; L{private_log_observer} writes it instead, mode
C{0600}, rotating on C{SIGUSR1} as twistd does.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any, Final

from twisted.logger import ILogObserver, textFileLogObserver
from twisted.python.logfile import LogFile

#: The mode of every log file the server creates.
LOG_FILE_MODE: Final = 0o600


def twistd_log_file(twistd_options: Mapping[str, Any] | None) -> str | None:
    """
    The file twistd would log to with C{twistd_options} (its own options,
    the parent of a plugin's), or C{None} when it logs elsewhere (standard
    output, syslog, an observer of the user's choosing).
    """
    if twistd_options is None:
        return None
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    name: str = twistd_options.get("logfile") or ""
    if name == "-" or (twistd_options.get("nodaemon") and not name):
        return None
    return name or "twistd.log"


def private_log_file(path: str) -> LogFile:
    """
    The log file at C{path}, created (or, when it exists, changed to) mode
    C{0600}; files it rotates to get the same mode.
    """
    log_file: LogFile = LogFile.fromFullPath(path, defaultMode=LOG_FILE_MODE)
    return log_file


def private_log_observer(path: str) -> ILogObserver:
    """
    An observer writing text log lines to L{private_log_file}, which
    C{SIGUSR1} rotates (unless that signal already has a handler).
    """
    log_file = private_log_file(path)
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return textFileLogObserver(log_file)  # type: ignore[arg-type]
