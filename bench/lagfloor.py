"""
The machine's own timer lateness, as a baseline for the router's lag probe.

A process with nothing to do but a 50 ms Twisted timer (the interval of
C{cluso_router.router.lag}'s probe) measures how late each tick runs. Each
line on its stdin starts a new window (start it early, so that its own
start-up is not in the window, then send a line); when stdin closes it
prints the worst lateness of the window in milliseconds. Run
beside a server under test, it shows how much of the lateness the server's
probe reports is the machine's (scheduling, other processes, a virtual
CPU's steal) rather than the server's own work.

    (sleep 2; echo; sleep 20) | python bench/lagfloor.py   # {"worstMs": 3.1, "ticks": 400}
"""

from __future__ import annotations

import json
import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall

INTERVAL = 0.05


class Probe:
    def __init__(self) -> None:
        self.due = reactor.seconds()
        self.worst = 0.0
        self.ticks = 0

    def new_window(self) -> None:
        self.worst = 0.0
        self.ticks = 0

    def tick(self) -> None:
        now = reactor.seconds()
        late = max(0.0, now - self.due)
        self.due += INTERVAL * (1 + int(late / INTERVAL))
        self.worst = max(self.worst, late)
        self.ticks += 1


class UntilClosed(Protocol):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def dataReceived(self, data: bytes) -> None:
        self.probe.new_window()

    def connectionLost(self, reason: object = None) -> None:
        print(json.dumps({"worstMs": round(self.probe.worst * 1000, 3), "ticks": self.probe.ticks}))
        sys.stdout.flush()
        reactor.stop()


def main() -> None:
    probe = Probe()
    LoopingCall(probe.tick).start(INTERVAL)
    stdio.StandardIO(UntilClosed(probe))
    reactor.run()


if __name__ == "__main__":
    main()
