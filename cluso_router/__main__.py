"""
C{cluso} (also installed as C{cluso-router}, and run as C{python -m
cluso_router}): the same service as C{twistd -n cluso}, with the same
options, for people who do not run twistd.

Unlike twistd it writes nothing into the directory it serves (no pid
file), logs to standard output unless C{--logfile} says otherwise, and
when it cannot start says why in one line on standard error and exits
non-zero: 2 for a bad command line, 1 when the service cannot start.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Final

from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage
from twisted.python.logfile import LogFile

from cluso_router.service import CannotListen
from cluso_router.tap import Options, makeService

#: A log file is rotated at this size, and this many old ones are kept.
LOG_ROTATE_BYTES: Final = 10_000_000
LOG_FILES_KEPT: Final = 5


class CommandOptions(Options):
    """
    The options of C{twistd cluso}, and where the log goes.
    """

    optParameters = [
        [
            "logfile",
            None,
            "-",
            f"Write the log to this file instead of standard output ('-'); it is rotated "
            f"at {LOG_ROTATE_BYTES // 1_000_000} MB and {LOG_FILES_KEPT} old files are kept.",
        ],
    ]


def program_name(argv0: str) -> str:
    """
    How the user started this program, for messages and usage.
    """
    name = os.path.basename(argv0)
    return "python -m cluso_router" if name == "__main__.py" else name or "cluso"


def open_log(path: str) -> IO[str] | LogFile:
    """
    Where the log goes: standard output for C{-}, else the rotated file.

    @raise OSError: when the file cannot be written.
    """
    if path == "-":
        return sys.stdout
    directory, name = os.path.split(os.path.abspath(path))
    return LogFile(name, directory, rotateLength=LOG_ROTATE_BYTES, maxRotatedFiles=LOG_FILES_KEPT)


def main(argv: list[str] | None = None) -> int:
    program = program_name(sys.argv[0])
    options = CommandOptions()
    options.synopsis = f"Usage: {program} [options]"
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{program}: {e} (see {program} --help)", file=sys.stderr)
        return 2
    try:
        log: Any = open_log(options["logfile"])
    except OSError as e:
        print(f"{program}: --logfile {options['logfile']}: {e.strerror}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    try:
        service = makeService(options)
        service.privilegedStartService()
        service.startService()
    except CannotListen as e:
        print(f"{program}: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"{program}: cannot start: {e}", file=sys.stderr)
        return 1
    # What was logged while starting is kept by the log beginner and written
    # once the reactor runs (and handles SIGTERM): a failed start prints
    # nothing but its one line, and "listening on" means ready to be stopped.
    reactor.callWhenRunning(
        globalLogBeginner.beginLoggingTo, [textFileLogObserver(log)], redirectStandardIO=False
    )
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    if os.environ.get("CLUSO_WORKER"):
        from cluso_router.workers import become_worker

        become_worker(reactor)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
