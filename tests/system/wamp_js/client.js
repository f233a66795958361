// A WAMP client on AutobahnJS for the interoperability test:
//   node client.js WS_URL REALM
// joins REALM, subscribes to "files", calls "server.info", then calls
// "test.touch" (which the test registers to announce a file change) and
// waits for that event. Prints one JSON object per line; exits 0 once both
// the event and the call's result arrived.
"use strict";

if (typeof globalThis.WebSocket === "undefined") {
    globalThis.WebSocket = require("ws");
}
const autobahn = require("autobahn");

const [url, realm] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const fail = (why) => {
    print({ failed: String(why) });
    process.exit(1);
};
setTimeout(() => fail("timed out"), 15000);

const connection = new autobahn.Connection({
    url,
    realm,
    max_retries: 0,
    retry_if_unreachable: false,
});
const waiting = new Set(["event", "touched"]);
const arrived = (what, value) => {
    print({ [what]: value });
    waiting.delete(what);
    if (waiting.size === 0) {
        connection.onclose = null;
        connection.close();
        process.exit(0);
    }
};

connection.onopen = async (session, details) => {
    try {
        print({ joined: { session: session.id, authmethod: details.authmethod } });
        await session.subscribe("files", (args) => arrived("event", args[0]));
        print({ info: await session.call("server.info") });
        arrived("touched", await session.call("test.touch", ["from-js.txt"]));
    } catch (error) {
        fail(error.error ? `${error.error} ${JSON.stringify(error.args)}` : error);
    }
};
connection.onclose = (reason, details) => {
    fail(`closed: ${reason} ${details && details.reason}`);
};
connection.open();
