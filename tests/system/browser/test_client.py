"""
Unit tests of C{cluso-client.js}, run in Chromium against the real server
(and, for protocol features the server does not have yet, a scripted fake
socket inside the page).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .support import HARNESS_URL, Server, unused_port


def run(page: Any, body: str, arg: Any = None, timeout: float = 20.0) -> Any:
    """
    Run C{body} as an async function in the page, with the client module as
    C{C}, the test harness as C{H} and C{arg} as C{arg}; return its result,
    or fail after C{timeout} seconds.
    """
    return page.evaluate(
        f"""async (arg) => {{
            const C = await import("/client/cluso-client.js");
            const H = await import("{HARNESS_URL}");
            const body = async () => {{ {body} }};
            return await Promise.race([
                body(),
                H.sleep({timeout * 1000}).then(() => {{
                    throw new Error("test timed out in the page");
                }}),
            ]);
        }}""",
        arg,
    )


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """
    One server (without event sources) for the tests of this module that
    do not stop it; each uses channels of its own.
    """
    server = Server(tmp_path_factory.mktemp("root"), ["--sources", ""]).start()
    yield server
    server.stop()


@pytest.fixture
def server(shared_server: Server, page: Any) -> Server:
    """
    The shared server, with the page signed in on its origin.
    """
    return signed_in(page, shared_server)


def signed_in(page: Any, server: Server) -> Server:
    page.goto(server.sign_in_url("api/health"))
    assert page.url == server.url + "api/health"
    return server


def test_websocket_url(page: Any, server: Server) -> None:
    """
    The WebSocket URL follows the original adapter's rules: ws(s) for
    http(s), the base path kept, /ws appended, query and fragment dropped;
    ws:// URLs are used as given and the default is the page's origin.
    """
    urls = run(
        page,
        """
        return [
            C.websocketUrl("http://localhost:3000"),
            C.websocketUrl("https://h/app"),
            C.websocketUrl("https://h/app/?token=x#y"),
            C.websocketUrl("ws://127.0.0.1:9/custom"),
            new C.ClusoClient().url,
        ];
        """,
    )
    assert urls == [
        "ws://localhost:3000/ws",
        "wss://h/app/ws",
        "wss://h/app/ws",
        "ws://127.0.0.1:9/custom",
        server.url.replace("http", "ws") + "ws",
    ]


def test_signs_in_from_the_link_fragment_without_a_cookie(page: Any, shared_server: Server) -> None:
    """
    A page opened with C{#token=} signs in with C{signIn()}: the token goes
    to sessionStorage and out of the address bar, the client offers it as
    a subprotocol (answered C{cluso.v1}) and C{client.fetch} as a Bearer
    header; no cookie is involved. A client of another origin's server is
    never given this tab's token.
    """
    server = shared_server
    page.goto(f"{server.url}client/cluso-client.d.ts#token={server.token}&x=1")
    assert page.context.cookies() == []
    result = run(
        page,
        """
        const token = C.signIn();
        const { WebSocket, record } = H.recordingWebSocket();
        const client = new C.ClusoClient(undefined, { WebSocket });
        await client.connect();
        const socket = record.sockets[0];
        const health = await client.fetch("api/health");
        const seen = [];
        class Capture {
          constructor(url, protocols) {
            seen.push(protocols ?? null);
            throw new Error("not connecting");
          }
        }
        const other = new C.ClusoClient("http://127.0.0.1:9/", { WebSocket: Capture });
        other.onError(() => {});
        const attempt = other.connect().catch(() => "closed");
        other.close();
        await attempt;
        client.close();
        return {
          token,
          hash: location.hash,
          stored: sessionStorage.getItem(C.TOKEN_STORAGE_KEY),
          protocol: socket.protocol,
          health: health.status,
          seen,
          offered: C.websocketProtocols("a/b+c"),
        };
        """,
    )
    assert result == {
        "token": server.token,
        "hash": "#x=1",
        "stored": server.token,
        "protocol": "cluso.v1",
        "health": 200,
        "seen": [None],
        "offered": ["cluso.v1", "cluso.token.a%2Fb%2Bc"],
    }
    assert page.context.cookies() == []


def test_subscribe_shares_one_server_subscription(page: Any, server: Server) -> None:
    """
    Two callbacks on a channel make one server subscription; removing one
    keeps it, removing the last unsubscribes; each callback gets the events
    while it is subscribed, and one that throws does not stop the others.
    """
    result = run(
        page,
        """
        const { WebSocket, record } = H.recordingWebSocket();
        const client = new C.ClusoClient(undefined, { WebSocket });
        const errors = [];
        client.onError((e) => errors.push(e.message));
        const first = [], second = [];
        const offFirst = client.subscribe("demo.shared", (d) => {
            first.push(d.n);
            if (d.n === 1) throw new Error("boom");
        });
        const offSecond = client.subscribe("demo.shared", (d, meta) => {
            second.push([d.n, meta.channel, typeof meta.timestamp]);
        });
        const subscribed = (n) => async () => (await H.subscribers("demo.shared")) === n;
        await client.connect();
        await H.waitFor(subscribed(1), "the subscription");
        const countBoth = await H.subscribers("demo.shared");
        await H.publish("demo.shared", { n: 1 });
        await H.waitFor(() => first.length === 1 && second.length === 1, "event 1");
        offFirst();
        offFirst();
        await H.publish("demo.shared", { n: 2 });
        await H.waitFor(() => second.length === 2, "event 2");
        const countOne = await H.subscribers("demo.shared");
        offSecond();
        await H.waitFor(subscribed(0), "the unsubscription");
        await H.publish("demo.shared", { n: 3 });
        await H.sleep(200);
        client.close();
        return { sent: record.sent, countBoth, countOne, first, second, errors };
        """,
    )
    kinds = [(f["type"], f.get("channel")) for f in result["sent"]]
    assert kinds == [("subscribe", "demo.shared"), ("unsubscribe", "demo.shared")]
    assert result["countBoth"] == 1
    assert result["countOne"] == 1
    assert result["first"] == [1]
    assert result["second"] == [[1, "demo.shared", "string"], [2, "demo.shared", "string"]]
    assert result["errors"] == ["boom"]


def test_invoke_resolves_and_rejects_on_server_error(page: Any, server: Server) -> None:
    """
    invoke resolves with the reply's data, and rejects with a ClusoError
    carrying the server's message and code when the reply has an error.
    """
    result = run(
        page,
        """
        const client = new C.ClusoClient();
        const info = await H.settle(client.invoke("server.info"));
        const missing = await H.settle(client.invoke("no.such.procedure", { x: 1 }));
        const stillWorks = await H.settle(client.invoke("server.info"));
        client.close();
        return { info, missing, stillWorks };
        """,
    )
    assert result["info"]["ok"]
    assert result["info"]["value"]["cwd"] == str(server.root.resolve())
    assert "server.info" in result["info"]["value"]["procedures"]
    missing = result["missing"]
    assert not missing["ok"]
    assert missing["isError"]
    assert missing["name"] == "ClusoError"
    assert missing["code"] == "no_such_procedure"
    assert "no.such.procedure" in missing["message"]
    assert result["stillWorks"]["ok"]


def test_invoke_times_out(page: Any, server: Server) -> None:
    """
    A call with no reply rejects with code timeout after its timeout, and
    the connection stays usable.
    """
    result = run(
        page,
        """
        const { WebSocket, record } = H.recordingWebSocket();
        record.drop = (frame) => frame.type === "invoke" && frame.data === "lost";
        const client = new C.ClusoClient(undefined, { WebSocket });
        const lost = await H.settle(client.invoke("server.info", "lost", { timeout: 300 }));
        const next = await H.settle(client.invoke("server.info"));
        const status = client.status;
        client.close();
        return { lost, next, status, sockets: record.sockets.length };
        """,
    )
    assert result["lost"]["code"] == "timeout"
    assert result["lost"]["message"] == "Request timeout for channel server.info"
    # Timers may fire a little early against performance.now() under load.
    assert 250 <= result["lost"]["ms"] < 3000
    assert result["next"]["ok"]
    assert result["status"] == "open"
    assert result["sockets"] == 1


def test_invoke_rejects_on_disconnect_then_reconnects(page: Any, server: Server) -> None:
    """
    A call waiting for its reply rejects with code disconnected when the
    connection closes, and the client reconnects by itself.
    """
    result = run(
        page,
        """
        const { WebSocket, record } = H.recordingWebSocket();
        record.drop = (frame) => frame.type === "invoke" && frame.data === "lost";
        const client = new C.ClusoClient(undefined, { WebSocket, initialDelay: 50 });
        await client.connect();
        const firstId = client.server.connectionId;
        const pending = H.settle(client.invoke("server.info", "lost"));
        await H.waitFor(() => record.sent.length === 1, "the invoke frame");
        record.sockets[0].close();
        const lost = await pending;
        await H.waitFor(() => client.status === "open", "the reconnection");
        const after = await H.settle(client.invoke("server.info"));
        const secondId = client.server.connectionId;
        client.close();
        return { lost, after, sockets: record.sockets.length, firstId, secondId };
        """,
    )
    assert result["lost"]["code"] == "disconnected"
    assert result["lost"]["ms"] < 2000
    assert result["after"]["ok"]
    assert result["sockets"] == 2
    assert result["firstId"] != result["secondId"]


def test_reconnect_backoff_grows_with_jitter(page: Any, server: Server) -> None:
    """
    With no server to reach, attempts are spaced by a delay that doubles up
    to the maximum, each shortened by at most the jitter fraction: exactly
    so with a fixed random source, within bounds with Math.random.
    """
    dead = f"http://127.0.0.1:{unused_port()}/"
    result = run(
        page,
        """
        async function attempts(random, count) {
            const seen = [];
            const options = { initialDelay: 20, maxDelay: 160, factor: 2, jitter: 0.5 };
            if (random) options.random = random;
            const client = new C.ClusoClient(arg, options);
            client.onStatus((status, detail) => seen.push([status, detail.attempt, detail.delay]));
            client.connect().catch(() => {});
            const attempted = () => seen.filter(([s]) => s === "reconnecting").length >= count;
            await H.waitFor(attempted, `${count} attempts`, 10000);
            client.close();
            return seen;
        }
        let i = 0;
        const fixed = [0, 1, 0.5, 0, 1, 0];
        return {
            fixed: await attempts(() => fixed[i++ % fixed.length], 6),
            random: await attempts(null, 7),
        };
        """,
        dead,
    )
    fixed = result["fixed"]
    assert fixed[0] == ["connecting", None, None]
    reconnecting = [entry for entry in fixed if entry[0] == "reconnecting"]
    assert [(attempt, delay) for _, attempt, delay in reconnecting[:6]] == [
        (1, 20),
        (2, 20),
        (3, 60),
        (4, 160),
        (5, 80),
        (6, 160),
    ]
    assert fixed[-1][0] == "closed"
    delays = [delay for status, _, delay in result["random"] if status == "reconnecting"]
    for attempt, delay in enumerate(delays):
        ceiling = min(160, 20 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delays)


def test_reconnects_and_resubscribes_after_server_restart(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    When the server stops, the client reports reconnecting; when it is back
    on the same port, the client reconnects by itself (with its token: the
    page's session cookie died with the old server), subscribes every
    channel again and receives events on them.
    """
    server = signed_in(page, launch(args=["--sources", ""]))
    page.evaluate(
        f"""async (token) => {{
            const C = await import("/client/cluso-client.js");
            const H = await import("{HARNESS_URL}");
            const {{ WebSocket, record }} = H.recordingWebSocket();
            const options = {{ WebSocket, initialDelay: 100, maxDelay: 400, token }};
            const client = new C.ClusoClient(undefined, options);
            const state = {{ record, statuses: [], got: [] }};
            client.onStatus((s) => state.statuses.push(s));
            client.subscribe("demo.one", (d) => state.got.push(["demo.one", d.n]));
            client.subscribe("demo.two", (d) => state.got.push(["demo.two", d.n]));
            await client.connect();
            state.firstId = client.server.connectionId;
            window.state = state;
            window.client = client;
        }}""",
        server.token,
    )
    wait_for_subscribers(server, "demo.two", 1)
    server.stop()
    page.wait_for_function("window.state.statuses.includes('reconnecting')")
    server.start()
    page.wait_for_function("window.client.status === 'open'")
    wait_for_subscribers(server, "demo.one", 1)
    wait_for_subscribers(server, "demo.two", 1)
    server.post("api/events/demo.one", {"n": 1})
    server.post("api/events/demo.two", {"n": 2})
    page.wait_for_function("window.state.got.length === 2")
    result = page.evaluate(
        """() => ({
            got: window.state.got,
            statuses: window.state.statuses,
            subscribes: window.state.record.sent
                .filter((f) => f.type === "subscribe")
                .map((f) => f.channel),
            changedId: window.client.server.connectionId !== window.state.firstId,
        })"""
    )
    assert result["got"] == [["demo.one", 1], ["demo.two", 2]]
    assert result["statuses"][:2] == ["connecting", "open"]
    assert result["statuses"][-1] == "open"
    assert "reconnecting" in result["statuses"]
    assert sorted(result["subscribes"]) == ["demo.one", "demo.one", "demo.two", "demo.two"]
    assert result["changedId"]


def wait_for_subscribers(server: Server, channel: str, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while server.subscribers(channel) != count:
        assert time.monotonic() < deadline, f"{channel} never had {count} subscribers"
        time.sleep(0.02)


def test_status_listeners(page: Any, server: Server) -> None:
    """
    A lazy client is idle until first used, then reports connecting and
    open, and closed after close(); a removed listener hears nothing more.
    """
    result = run(
        page,
        """
        const client = new C.ClusoClient();
        const heard = [], removedHeard = [];
        const initial = client.status;
        client.onStatus((status) => heard.push(status));
        const remove = client.onStatus((status) => removedHeard.push(status));
        await H.sleep(100);
        const stillIdle = client.status;
        const call = client.invoke("server.info");
        remove();
        const info = await H.settle(call);
        client.close();
        return { initial, stillIdle, heard, removedHeard, info: info.ok };
        """,
    )
    assert result["initial"] == "idle"
    assert result["stillIdle"] == "idle"
    assert result["heard"] == ["connecting", "open", "closed"]
    assert result["removedHeard"] == ["connecting"]
    assert result["info"]


def test_close_stops_for_good(page: Any, server: Server) -> None:
    """
    close() rejects pending calls with code closed, closes the connection,
    and afterwards nothing reconnects, invoke rejects, send drops and
    subscribe throws.
    """
    result = run(
        page,
        """
        const { WebSocket, record } = H.recordingWebSocket();
        record.drop = (frame) => frame.type === "invoke";
        const client = new C.ClusoClient(undefined, { WebSocket, initialDelay: 20 });
        client.subscribe("demo.close", () => {});
        await client.connect();
        const before = (await H.health()).connections;
        const pending = H.settle(client.invoke("server.info"));
        client.close();
        const rejected = await pending;
        const gone = async () => (await H.health()).connections === before - 1;
        await H.waitFor(gone, "the server to see the close");
        await H.sleep(500);
        const later = await H.settle(client.invoke("server.info"));
        let subscribeError = null;
        try { client.subscribe("demo.close", () => {}); } catch (e) { subscribeError = e.code; }
        return {
            rejected, later, subscribeError,
            sent: client.send("demo.close", 1), status: client.status,
            sockets: record.sockets.length,
        };
        """,
    )
    assert result["rejected"]["code"] == "closed"
    assert result["later"]["code"] == "closed"
    assert result["subscribeError"] == "closed"
    assert result["sent"] is False
    assert result["status"] == "closed"
    assert result["sockets"] == 1


def test_send_waits_for_the_connection(page: Any, server: Server) -> None:
    """
    send() on a lazy client connects and delivers in order once open; a send
    the server refuses (a server-owned channel) reaches the error listeners.
    """
    result = run(
        page,
        """
        const listener = new C.ClusoClient();
        const got = [];
        listener.subscribe("demo.send", (d) => got.push(d));
        await listener.connect();
        await H.waitFor(async () => (await H.subscribers("demo.send")) === 1, "the subscription");
        const sender = new C.ClusoClient();
        const errors = [];
        sender.onError((e) => errors.push(e.code));
        const queued = [
            sender.send("demo.send", 1),
            sender.send("demo.send", 2),
            sender.send("files", {}),
        ];
        const status = sender.status;
        await H.waitFor(() => got.length === 2 && errors.length === 1, "delivery");
        sender.close();
        listener.close();
        return { queued, status, got, errors };
        """,
    )
    assert result["queued"] == [True, True, True]
    assert result["status"] == "connecting"
    assert result["got"] == [1, 2]
    assert result["errors"] == ["forbidden_channel"]


def test_recovery_positions(page: Any, server: Server) -> None:
    """
    The client keeps the last position per channel, asks for what it missed
    with `since` when it subscribes again, drops replayed duplicates, takes
    the replay after a lost history (new epoch) as new events, and passes
    the server's `recovered` answer on; driven by a scripted socket so every
    case is exact.
    """
    result = run(
        page,
        """
        const fake = H.fakeServer();
        const options = { WebSocket: fake.WebSocket, initialDelay: 10 };
        const client = new C.ClusoClient("ws://fake.invalid/ws", options);
        const got = [], acks = [];
        const onSubscribed = (info) => acks.push(info);
        client.subscribe("files", (d, meta) => got.push(meta.seq), { onSubscribed });
        const subscribes = () => fake.sent.filter((f) => f.type === "subscribe");
        const ack = (data) => fake.current.deliver({
            type: "response",
            id: subscribes().at(-1).id,
            data: { status: "subscribed", channel: "files", ...data },
        });
        const events = (...seqs) => seqs.forEach((seq) => fake.current.deliver(
            { type: "event", channel: "files", data: {}, seq, timestamp: "t" },
        ));
        const reconnect = async (n) => {
            fake.current.close();
            const back = () => fake.sockets.length === n && client.status === "open";
            await H.waitFor(back, "the reconnection");
        };
        await client.connect();
        ack({ seq: 7, epoch: "e1" });
        events(8, 9);
        const position = client.position("files");
        await reconnect(2);
        ack({ seq: 10, epoch: "e1", recovered: true, replayed: 1 });
        events(9, 10, 11);
        await reconnect(3);
        ack({ seq: 2, epoch: "e2", recovered: false, replayed: 2 });
        events(1, 2, 3);
        const last = client.position("files");
        client.close();
        return { sent: subscribes(), got, acks, position, last };
        """,
    )
    assert "since" not in result["sent"][0]
    assert result["position"] == {"seq": 9, "epoch": "e1"}
    assert result["sent"][1]["since"] == {"seq": 9, "epoch": "e1"}
    assert result["sent"][2]["since"] == {"seq": 11, "epoch": "e1"}
    assert result["got"] == [8, 9, 10, 11, 1, 2, 3]
    assert result["last"] == {"seq": 3, "epoch": "e2"}
    assert [(a["resubscribed"], a.get("recovered")) for a in result["acks"]] == [
        (False, None),
        (True, True),
        (True, False),
    ]


def test_recovers_missed_events_after_reconnecting(page: Any, server: Server) -> None:
    """
    Against the real server: events published while the client was
    disconnected arrive once, in order, after it reconnects, and the server
    reports the subscription as recovered.
    """
    result = run(
        page,
        """
        const { WebSocket, record } = H.recordingWebSocket();
        const client = new C.ClusoClient(undefined, { WebSocket, initialDelay: 1000, jitter: 0 });
        const got = [], acks = [];
        const onSubscribed = (info) => acks.push([info.recovered, info.replayed]);
        client.subscribe("demo.recover", (d) => got.push(d.n), { onSubscribed });
        await client.connect();
        await H.waitFor(() => acks.length === 1, "the subscription");
        await H.publish("demo.recover", { n: 1 });
        await H.waitFor(() => got.length === 1, "the first event");
        record.sockets[0].close();
        await H.waitFor(() => client.status === "reconnecting", "the disconnection");
        for (const n of [2, 3, 4]) await H.publish("demo.recover", { n });
        await H.waitFor(() => acks.length === 2, "the resubscription");
        await H.publish("demo.recover", { n: 5 });
        await H.waitFor(() => got.length >= 5, "the missed and the live events");
        await H.sleep(200);
        const since = record.sent.filter((f) => f.type === "subscribe").at(-1).since;
        client.close();
        return { got, acks, since };
        """,
    )
    assert result["got"] == [1, 2, 3, 4, 5]
    assert result["acks"] == [[None, None], [True, 3]]
    assert result["since"]["seq"] == 1
