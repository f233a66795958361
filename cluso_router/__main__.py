"""
C{python -m cluso_router [options]}: the same service as C{twistd -n cluso},
without needing the twistd plugin to be discoverable.
"""

from __future__ import annotations

import sys

from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage

from cluso_router.tap import Options, makeService


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"cluso-router: {e}\n\n{options}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    service = makeService(options)
    try:
        service.startService()
    except Exception as e:
        print(f"cluso-router: cannot start: {e}", file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
