"""
The naive Autobahn baseline for the fan-out benchmark.

A plain C{WebSocketServerFactory} with Autobahn's default protocol options,
speaking the JSON dialect's subset the benchmark uses (greeting,
subscribe/unsubscribe acks, C{send}, the event envelope). A broadcast calls
C{json.dumps} and C{sendMessage} once per subscriber: what a first Autobahn
port of the original server looks like.

    python naive_autobahn.py [--port 0] [--host 127.0.0.1]

Prints C{listening on http://HOST:PORT/} once ready.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

_ids = itertools.count(1)


def timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class NaiveProtocol(WebSocketServerProtocol):
    factory: NaiveFactory

    def onOpen(self) -> None:
        self.own: set[str] = set()
        self.send_json(
            {
                "type": "response",
                "data": {
                    "status": "connected",
                    "connectionId": f"conn-{next(_ids)}",
                    "cwd": os.getcwd(),
                },
            }
        )

    def send_json(self, message: Any) -> None:
        self.sendMessage(json.dumps(message, separators=(",", ":")).encode("utf-8"))

    def reply(self, request: dict[str, Any], data: Any) -> None:
        message: dict[str, Any] = {"type": "response"}
        if "id" in request:
            message["id"] = request["id"]
        message["data"] = data
        self.send_json(message)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            request = json.loads(payload)
        except ValueError:
            self.send_json({"type": "response", "data": {"error": "Failed to parse message"}})
            return
        if not isinstance(request, dict):
            return
        channel = request.get("channel")
        if not isinstance(channel, str) or not channel:
            return
        kind = request.get("type")
        channels = self.factory.channels
        if kind == "subscribe":
            self.own.add(channel)
            channels.setdefault(channel, set()).add(self)
            self.reply(request, {"status": "subscribed", "channel": channel})
        elif kind == "unsubscribe":
            self.own.discard(channel)
            self.factory.forget(channel, self)
            self.reply(request, {"status": "unsubscribed", "channel": channel})
        elif kind == "send":
            delivered = self.factory.broadcast(channel, request.get("data"))
            if "id" in request:
                self.reply(request, {"status": "sent", "channel": channel, "delivered": delivered})

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        for channel in getattr(self, "own", ()):
            self.factory.forget(channel, self)


class NaiveFactory(WebSocketServerFactory):
    protocol = NaiveProtocol

    def __init__(self) -> None:
        super().__init__()
        self.channels: dict[str, set[NaiveProtocol]] = {}

    def forget(self, channel: str, protocol: NaiveProtocol) -> None:
        subscribers = self.channels.get(channel)
        if subscribers is not None:
            subscribers.discard(protocol)
            if not subscribers:
                del self.channels[channel]

    def broadcast(self, channel: str, data: Any) -> int:
        envelope = {"type": "event", "channel": channel, "data": data, "timestamp": timestamp()}
        delivered = 0
        for protocol in list(self.channels.get(channel, ())):
            protocol.send_json(envelope)
            delivered += 1
        return delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    from twisted.internet import reactor

    port = reactor.listenTCP(args.port, NaiveFactory(), backlog=1024, interface=args.host)
    address = port.getHost()
    print(f"naive-autobahn baseline listening on http://{address.host}:{address.port}/", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
