// The popup renders what the background knows and sends it intents; it never talks to
// the host itself. Live updates come over a "popup" port; questions go as runtime
// messages {type, ...}. It can also be opened as a tab: popup.html?tab=<id> names the tab
// to capture, popup.html#run=<id> opens a run's detail.

import { api } from "../lib/ext.js";
import { age, runCost, statusLabel, tokens, unconfirmedPhrase, usd, usdBudget } from "../lib/format.js";
import { isTerminalRun } from "../lib/states.js";
import { $, call, copyText, mark, markOnce, pageOf, runTitle, setFavicon } from "./common.js";
import { liveRowFacts } from "./live.js";
import { clearQueuedStatus, estimateFor, onOpenRun, refreshEstimate, sendPage, setTab } from "./send.js";
import { refreshBatchSources, renderButton as renderBatchButton, wireBatchSend } from "./batch.js";
import { batchRunIds, noteRunUpdated, refreshBatches, wireBatchRows } from "./batchrow.js";

mark("script-start");

const FIRST_WORKFLOW = "page-digest";
const params = new URLSearchParams(location.search);

const view = {
  state: null,
  tabId: params.has("tab") ? Number(params.get("tab")) : null,
  runs: new Map(),
  runsLoaded: false,
  rows: new Map(), // run id -> <li>
  wasConnected: false,
  lastTemplatesKey: "",
  outboxSeq: 0,
};

const connected = () => view.state?.connection?.status === "connected";

// The run detail (and its Markdown renderer) loads when a run is first opened: the popup's
// first paint and estimate do not wait for code they may never use.
let detail = null;

async function openDetail(runId, options) {
  if (!detail) {
    detail = await import("./detail.js");
    detail.wireDetail({ onClose: focusRow });
  }
  return detail.openDetail(runId, options);
}

// ---- connection ----------------------------------------------------------------------------

function isMissing(error) {
  return /not found|No such native application|not registered|Access to the specified native messaging host is forbidden/i
    .test(error || "");
}

function renderConnection(c) {
  const pill = $("connection");
  let status = c.status;
  let text = "Starting…";
  if (c.status === "connected") {
    const recent = c.reconnects > 0 && c.connectedAt && Date.now() - c.connectedAt < 20000;
    text = recent ? "Reconnected" : "Connected";
    status = "connected";
  } else if (c.status === "connecting") {
    text = c.everConnected ? "Reconnecting…" : "Connecting…";
    status = c.everConnected ? "reconnecting" : "connecting";
  } else if (c.status === "disconnected") {
    if (isMissing(c.error)) {
      text = "Host missing";
      status = "missing";
    } else {
      text = "Reconnecting…";
      status = "reconnecting";
    }
  }
  pill.textContent = text;
  pill.dataset.status = status;
  pill.title = c.error ? `Last host error: ${c.error}` : "";
  const problem = c.status === "disconnected" && (isMissing(c.error) || !c.everConnected || c.attempt >= 3);
  $("host-problem").hidden = !problem;
  if (problem) {
    const missing = isMissing(c.error);
    $("host-problem-title").textContent = missing ? "Hybrid Engine is not installed for this browser"
      : "Hybrid Engine's host stopped answering";
    $("host-problem-text").textContent = missing
      ? "The extension works with a small program on this computer, and the browser cannot start it. "
        + "Pages you send are kept until it answers."
      : "The program the extension works with has stopped. Pages you send are kept until it answers.";
    $("host-error").textContent = c.error || "(no message)";
    const wait = c.retryAt ? Math.max(0, Math.round((c.retryAt - Date.now()) / 1000)) : null;
    $("host-retry-note").textContent = wait !== null ? `Checking by itself${wait ? ` in ${wait} s` : " now"}.` : "";
  }
  $("version").textContent = c.hello?.version ? `host ${c.hello.version}` : "";
  // Spend is the host's to tell: no card until it has answered once.
  $("spend").hidden = c.status !== "connected" && !$("spend-text").dataset.today;
  const isConnected = c.status === "connected";
  if (isConnected && !view.wasConnected) onConnected();
  view.wasConnected = isConnected;
  updateSendButton();
  renderRunsEmpty();
}

function onConnected() {
  clearQueuedStatus(); // "kept until the host is back" is no longer true
  refreshRuns();
  refreshSpend();
  refreshEstimate(true);
  refreshBatches();
  if (view.tabKnown) refreshBatchSources(view.tabId, true, params.get("source"));
  if (detail?.detailId()) openDetail(detail.detailId(), { keepFocus: true });
}

// ---- state from the background -------------------------------------------------------------

function applyState(state) {
  if (!view.state) mark("state-received");
  view.state = state;
  renderTemplates(state.templates, state.settings?.lastWorkflow, state.defaultTemplate);
  renderConnection(state.connection);
  renderOutbox(state.outboxCount);
  if (state.runs) {
    for (const r of state.runs) view.runs.set(r.id, { ...(view.runs.get(r.id) || {}), ...r });
    renderRuns();
    if (state.runs.length) markOnce("runs-shown-cached");
  }
  $("app").setAttribute("aria-busy", "false");
}

// The workflow offered first: the one used last, else the default, else page-digest.
function renderTemplates(templates, last, preferred) {
  const usable = (templates || []).filter((t) => t.has_capture_slot !== false);
  const key = JSON.stringify([usable.length ? null : connected(), usable.map((t) => [t.name, t.description])]);
  if (key === view.lastTemplatesKey) return;
  view.lastTemplatesKey = key;
  const select = $("workflow");
  const names = usable.map((t) => t.name);
  const current = [select.value, params.get("template"), last, preferred, FIRST_WORKFLOW].find((n) => n && names.includes(n)) || names[0] || "";
  select.textContent = "";
  if (!usable.length) {
    select.append(new Option(connected() ? "No workflow with a page slot" : "No workflow yet (waiting for the host)", ""));
  }
  for (const t of usable) {
    const opt = new Option(t.name, t.name);
    opt.title = t.description || "";
    select.append(opt);
  }
  select.value = current;
  updateSendButton();
  refreshEstimate(connected());
}

function updateSendButton() {
  renderBatchButton();
  const button = $("send-button");
  if (button.dataset.busy === "true") return;
  button.disabled = !$("workflow").value;
}

// ---- outbox ---------------------------------------------------------------------------------

// The background answers with headers only (title, URL, template, size, attempts): the pages
// stay in storage. Replies can cross: only the newest request's answer is drawn. The host's
// error is said once, in the problem card: here only what waits.
async function renderOutbox(count) {
  const seq = ++view.outboxSeq;
  $("outbox").hidden = !count;
  if (!count) return;
  $("outbox-text").textContent = `${count} capture${count === 1 ? "" : "s"} waiting; sent as soon as the host answers.`;
  let items;
  try {
    ({ items } = await call("outbox"));
  } catch {
    return;
  }
  if (seq !== view.outboxSeq) return;
  const list = $("outbox-list");
  list.textContent = "";
  for (const item of items) list.append(outboxRow(item));
}

function outboxRow(item) {
  const name = item.title || item.url || "this page";
  const li = document.createElement("li");
  li.dataset.id = item.id;
  const label = document.createElement("span");
  label.className = "ellipsis";
  label.textContent = `${item.kind || "page"} → ${item.template}: ${item.title || item.url || ""}`;
  if (item.refused) {
    label.textContent += ` (refused: ${item.refused.message})`;
    label.title = item.refused.message;
  } else if (item.attempts) {
    // Sent before without an answer: the host may already have made its run (only one).
    label.title = `Sent ${item.attempts} time${item.attempts === 1 ? "" : "s"} without an answer`;
  }
  li.append(label);
  if (item.refused) li.append(outboxButton("Send again", `Send the capture of ${name} again`, "outbox.retry", item));
  li.append(outboxButton("Discard", `Discard the capture of ${name}`, "outbox.discard", item));
  return li;
}

function outboxButton(text, label, type, item) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "small";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await call(type, { id: item.id });
    } catch (err) {
      $("outbox-text").textContent = `${text} failed: ${err.message}`;
      button.disabled = false;
    }
  });
  return button;
}

// ---- spend ----------------------------------------------------------------------------------

function figure(text) {
  const span = document.createElement("span");
  span.className = "figure";
  span.textContent = text;
  return span;
}

async function refreshSpend() {
  try {
    const s = await call("spend");
    const budget = s.daily_budget_usd;
    const line = $("spend-text");
    line.textContent = "";
    // Each fact kept whole: a narrow line wraps between "today" and "this month", never
    // between a label and its figure.
    const today = document.createElement("span");
    const month = document.createElement("span");
    today.className = month.className = "nowrap";
    today.append(figure(usd(s.today)));
    today.append(budget ? " of " : " today", ...(budget ? [figure(usdBudget(budget)), " daily budget"] : []));
    month.append("this month ", figure(usd(s.this_month)));
    line.append(today, " · ", month);
    line.dataset.today = String(s.today);
    const unpriced = Object.values(s.today_unpriced_steps || {}).reduce((a, b) => a + b, 0);
    const extra = [];
    if (s.today_estimated) extra.push(`≈${usd(s.today_estimated)} of today estimated`);
    if (unpriced) extra.push(`${unpriced} step${unpriced === 1 ? "" : "s"} today with unknown price, not counted`);
    const lost = unconfirmedPhrase(s.today_unconfirmed, " today").replace(/^ · /, "");
    if (lost) extra.push(lost);
    if (!budget) extra.push("no daily budget set");
    $("spend-extra").hidden = !extra.length;
    $("spend-extra").textContent = extra.join(" · ");
    const meter = $("spend-meter");
    meter.hidden = !budget;
    if (budget) {
      const ratio = Math.min(1, s.today / budget);
      // A small amount still shows: a sliver, never an empty track that reads as nothing spent.
      const pct = s.today > 0 ? Math.max(ratio * 100, 2) : 0;
      meter.querySelector("span").style.width = `${pct.toFixed(1)}%`;
      meter.setAttribute("aria-valuemax", String(budget));
      meter.setAttribute("aria-valuenow", String(s.today));
      meter.setAttribute("aria-valuetext", `${usd(s.today)} of ${usdBudget(budget)}`);
      meter.dataset.over = String(s.today >= budget);
    }
  } catch (err) {
    // The database's problem is said once, where the runs would be.
    $("spend-text").textContent = String(err.code || "").startsWith("store_")
      ? "Spend unavailable until the database is fixed (see below)." : `Spend unavailable: ${err.message}`;
  }
}

// ---- runs list ------------------------------------------------------------------------------

async function refreshRuns() {
  try {
    const { runs } = await call("runs.list");
    for (const r of runs) view.runs.set(r.id, r);
    view.runsLoaded = true;
    view.runsError = null;
    renderRuns();
    markOnce("runs-shown");
  } catch (err) {
    view.runsError = `Runs unavailable: ${err.message}`;
    renderRunsEmpty();
  }
}

// "No runs yet" only when the host said so; while it is away, the list is not known.
function renderRunsEmpty() {
  const empty = $("runs-empty");
  if (view.runs.size) {
    empty.hidden = true;
    return;
  }
  empty.hidden = false;
  empty.classList.toggle("error-text", !!view.runsError);
  if (view.runsError) empty.textContent = view.runsError;
  else if (view.runsLoaded) empty.textContent = "No runs yet. Send a page to start one.";
  else if (!connected()) empty.textContent = "Your runs show here when the host answers.";
  else empty.textContent = "Loading runs…";
}

// A batch's runs are its row's (batchrow.js), not rows of their own.
function sortedRuns() {
  const inBatch = batchRunIds();
  return [...view.runs.values()]
    .filter((r) => !inBatch.has(r.id))
    .sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")))
    .slice(0, 20);
}

function renderRuns() {
  const list = $("run-list");
  const runs = sortedRuns();
  renderRunsEmpty();
  const keep = new Set(runs.map((r) => r.id));
  for (const [id, li] of view.rows) {
    if (!keep.has(id)) {
      li.remove();
      view.rows.delete(id);
    }
  }
  runs.forEach((run, index) => {
    let li = view.rows.get(run.id);
    if (!li) {
      li = buildRow(run.id);
      view.rows.set(run.id, li);
    }
    fillRow(li, run);
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
  });
}

function span(className, parent) {
  const el = document.createElement("span");
  el.className = className;
  parent.append(el);
  return el;
}

function buildRow(id) {
  const li = document.createElement("li");
  li.dataset.runId = id;
  const b = document.createElement("button");
  b.type = "button";
  b.className = "run";
  const head = span("head", b);
  const icon = document.createElement("img");
  icon.className = "favicon";
  icon.alt = "";
  icon.width = 16;
  icon.height = 16;
  head.append(icon);
  span("name", head).dir = "auto"; // a right-to-left title reads (and is cut) in its own direction
  span("status", b);
  span("sub", b);
  const bar = span("progress", b);
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  span("", bar);
  const facts = span("facts", b);
  for (const c of ["steps-done", "tokens", "cost", "live", "age"]) span(c, facts);
  b.addEventListener("click", () => openDetail(id, { summary: view.runs.get(id) }));
  li.append(b);
  return li;
}

function fillRow(li, run) {
  const b = li.firstElementChild;
  const done = Number(run.completed_steps || 0);
  const total = Number(run.total_steps || 0);
  const pct = total ? Math.round((100 * done) / total) : 0;
  const cost = runCost(run);
  const page = pageOf(run);
  const title = runTitle(run);
  const terminal = isTerminalRun(run.status);
  li.dataset.status = run.status;
  b.querySelector(".name").textContent = title;
  setFavicon(b.querySelector(".favicon"), page);
  b.querySelector(".sub").textContent = page.title ? [page.site, run.name].filter(Boolean).join(" · ") : "";
  b.querySelector(".sub").hidden = !page.title;
  const st = b.querySelector(".status");
  st.textContent = statusLabel(run.status);
  st.dataset.status = run.status;
  const bar = b.querySelector(".progress");
  bar.dataset.status = run.status;
  bar.hidden = terminal;
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(done));
  bar.setAttribute("aria-valuetext", `${done} of ${total} steps (${pct}%)`);
  bar.setAttribute("aria-label", `Progress of ${title}`);
  bar.dataset.percent = String(pct);
  bar.firstElementChild.style.width = `${pct}%`;
  b.querySelector(".steps-done").textContent = `${done}/${total} steps`;
  // While it runs: elapsed time and the expected range, not a "0 tok · $0" that reads as final.
  const live = terminal ? "" : liveRowFacts(run, estimateFor(run.id));
  b.querySelector(".live").textContent = live;
  b.querySelector(".live").hidden = terminal;
  const tok = b.querySelector(".tokens");
  tok.textContent = tokens(run.total_tokens);
  tok.hidden = !terminal || !Number(run.total_tokens); // a run with no model call has no token count to show
  const c = b.querySelector(".cost");
  c.textContent = cost.text;
  c.title = cost.title;
  c.hidden = !terminal;
  c.dataset.cost = run.unknown_cost_steps > 0 && !run.total_cost ? "unknown" : String(run.total_cost ?? 0);
  b.querySelector(".age").textContent = terminal ? age(run.createdAt) : ""; // a running one says its elapsed time
  b.setAttribute("aria-label",
    `${title}: ${statusLabel(run.status)}, ${done} of ${total} steps, `
    + (terminal ? `${tokens(run.total_tokens)}, cost ${cost.text}, ` : `${live}, `)
    + `started ${age(run.createdAt)}. Open details.`);
}

// ---- wiring ---------------------------------------------------------------------------------

function connectPort() {
  const port = api.runtime.connect({ name: "popup" });
  port.onMessage.addListener((msg) => {
    if (msg.type === "state") applyState(msg.state);
    else if (msg.type === "run.updated") {
      const before = view.runs.get(msg.run.id);
      view.runs.set(msg.run.id, { ...(before || {}), ...msg.run });
      renderRuns();
      detail?.scheduleDetailReload(msg.run.id);
      noteRunUpdated(msg.run.id);
      if (isTerminalRun(msg.run.status) && before && !isTerminalRun(before.status)) refreshSpend();
    }
  });
  // The background's service worker may be stopped and restarted: reconnect.
  port.onDisconnect.addListener(() => setTimeout(connectPort, 100));
}

function focusRow(runId) {
  const li = runId && view.rows.get(runId);
  if (li) li.firstElementChild.focus();
}

async function start() {
  connectPort(); // first: the state (templates, connection) is what everything else waits for
  if (view.tabId === null) {
    try {
      const [tab] = await api.tabs.query({ active: true, currentWindow: true });
      if (tab && !String(tab.url || "").startsWith(location.origin)) view.tabId = tab.id;
    } catch {
      // the background falls back to the active tab
    }
  }
  setTab(view.tabId);
  view.tabKnown = true;
  if (connected()) refreshBatchSources(view.tabId, true, params.get("source"));
  $("send-button").addEventListener("click", () => sendPage({
    onStarted: (runId) => {
      if (!view.runs.has(runId)) refreshRuns();
    },
  }));
  $("workflow").addEventListener("change", () => {
    call("settings.set", { settings: { lastWorkflow: $("workflow").value } }).catch(() => {});
    refreshEstimate(connected(), { force: true });
  });
  $("retry").addEventListener("click", () => call("connect").catch(() => {}));
  onOpenRun((runId) => openDetail(runId, { summary: view.runs.get(runId) }));
  wireBatchSend({ onSent: () => refreshBatches() });
  wireBatchRows({ onOpenRun: (runId) => openDetail(runId, { summary: view.runs.get(runId) }), onChange: renderRuns });
  for (const b of document.querySelectorAll("[data-copy]")) {
    b.addEventListener("click", () => copyText($(b.dataset.copy).textContent, b));
  }
  setInterval(() => {
    renderRuns(); // ages, elapsed times
    detail?.tickDetail();
    if (view.state) renderConnection(view.state.connection);
  }, 1000);
  const m = location.hash.match(/^#run=(.+)$/);
  if (m) openDetail(decodeURIComponent(m[1]));
  if (view.state) refreshEstimate(connected());
}

start();
