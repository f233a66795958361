// The TypeScript MCP SDK's client against the router's /mcp (2025-11-25
// sessions). Usage: node mcp_client.mjs MCP_URL TOKEN EVENTS_URL
// Prints one JSON object per line: {step: value}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const [url, token, eventsUrl] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${token}` };
const say = (step, value) => console.log(JSON.stringify({ [step]: value }));

const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "cluso-contract-test", version: "0.0.1" });
await client.connect(transport);
say("server", client.getServerVersion());

const tools = [];
let cursor;
do {
  const listed = await client.listTools(cursor ? { cursor } : {});
  tools.push(...listed.tools);
  cursor = listed.nextCursor;
} while (cursor);
say("tools", tools.map((t) => [t.name, t.annotations?.readOnlyHint ?? null]));

const written = await client.callTool({
  name: "files.writeFile",
  arguments: { path: "from-ts.txt", content: "written by the TypeScript client\n" },
});
say("written", written.structuredContent);
const read = await client.callTool({ name: "files.readFile", arguments: { path: "from-ts.txt" } });
say("read", read.structuredContent);
const refused = await client.callTool({ name: "files.readFile", arguments: { path: "../outside" } });
say("refused", { isError: refused.isError, text: refused.content[0].text });

const progress = [];
const found = await client.callTool(
  { name: "files.searchInFiles", arguments: { pattern: "needle" } },
  undefined,
  { onprogress: (p) => progress.push(p) },
);
say("search", { results: found.structuredContent.result.length, progress });

const updates = [];
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => updates.push(n.params.uri));
await client.subscribeResource({ uri: "cluso://channels/from-ts" });
const posted = await fetch(eventsUrl + "from-ts", {
  method: "POST",
  headers: { ...headers, "content-type": "application/json" },
  body: JSON.stringify({ hello: "agents" }),
});
say("posted", posted.status);
for (let i = 0; i < 100 && updates.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
say("updates", updates);
const history = await client.readResource({ uri: "cluso://channels/from-ts" });
say("history", JSON.parse(history.contents[0].text));

await transport.terminateSession();
await client.close();
say("closed", true);
