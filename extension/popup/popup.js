// The popup renders what the background knows and sends it intents; it never talks to
// the host itself. Live updates come over a "popup" port; questions go as runtime
// messages {type, ...}. It can also be opened as a tab: popup.html?tab=<id> names the tab
// to capture, popup.html#run=<id> opens a run's detail.

import { api } from "../lib/ext.js";
import { age, bytes, duration, runCost, statusLabel, tokens, usd, usdBudget } from "../lib/format.js";
import { RunStatus, StepStatus, isTerminalRun } from "../lib/states.js";
import { renderWasSent, renderWillSend } from "./sent.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const OUTPUT_PREVIEW_CHARS = 100000;
const ESTIMATED_TITLE = "Estimated from our own token count: the provider reported no usable token usage";

// The moments a person waits for, as User Timing marks named "popup:<moment>" (DevTools'
// Performance panel shows them; the end-to-end timing test reads them the same way).
function mark(moment, detail) {
  performance.mark(`popup:${moment}`, detail === undefined ? undefined : { detail });
}

function markOnce(moment) {
  if (!performance.getEntriesByName(`popup:${moment}`).length) mark(moment);
}

const view = {
  state: null,
  tabId: params.has("tab") ? Number(params.get("tab")) : null,
  runs: new Map(),
  rows: new Map(), // run id -> <li>
  detailId: null,
  detailRun: null,
  output: null, // full text of the open run's final output
  estimateSeq: 0,
  outboxSeq: 0,
  wasConnected: false,
  lastTemplatesKey: "",
  spendFor: null,
  retryBudget: null, // the run budget "Retry" offers after the old one stopped a step
};

// The host cannot use its database file: say so in plain words before its message, which names
// the file and the command that fixes it.
const STORE_PROBLEMS = {
  store_corrupt: "Hybrid Engine's database file is damaged or empty, so runs cannot be saved or shown.",
  store_read_only: "Hybrid Engine cannot write its database: its folder is read-only.",
  store_full: "The disk that holds Hybrid Engine's database is full.",
  store_unavailable: "Hybrid Engine cannot open its database.",
};

async function call(type, fields = {}) {
  const reply = await api.runtime.sendMessage({ type, ...fields });
  if (!reply) throw Object.assign(new Error("no answer from the background"), { code: "internal" });
  if (!reply.ok) {
    const code = reply.error?.code;
    const message = reply.error?.message || "failed";
    const plain = STORE_PROBLEMS[code];
    throw Object.assign(new Error(plain ? `${plain} ${message}` : message), { code });
  }
  return reply.result;
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
    $("host-error").textContent = c.error || "(no message)";
    const wait = c.retryAt ? Math.max(0, Math.round((c.retryAt - Date.now()) / 1000)) : null;
    $("host-retry-note").textContent = wait !== null
      ? `Trying again by itself${wait ? ` in ${wait} s` : " now"}; captures are kept until it answers.`
      : "";
  }
  $("version").textContent = c.hello?.version ? `host ${c.hello.version}` : "";
  // Spend is the host's to tell: no card until it has answered once.
  $("spend").hidden = c.status !== "connected" && !$("spend-text").dataset.today;
  const connected = c.status === "connected";
  if (connected && !view.wasConnected) onConnected();
  view.wasConnected = connected;
  updateSendButton();
}

function onConnected() {
  refreshRuns();
  refreshSpend();
  refreshEstimate();
  if (view.detailId) openDetail(view.detailId, { keepFocus: true });
}

// ---- state from the background -------------------------------------------------------------

function applyState(state) {
  view.state = state;
  renderTemplates(state.templates, state.defaultTemplate);
  renderConnection(state.connection);
  renderOutbox(state.outboxCount);
  if (state.runs) {
    for (const r of state.runs) view.runs.set(r.id, { ...(view.runs.get(r.id) || {}), ...r });
    renderRuns();
    if (state.runs.length) markOnce("runs-shown-cached");
  }
  renderLastCapture(state.captures?.[0]);
  $("app").setAttribute("aria-busy", "false");
}

function renderTemplates(templates, preferred) {
  const usable = (templates || []).filter((t) => t.has_capture_slot !== false);
  const key = JSON.stringify(usable.map((t) => [t.name, t.description]));
  if (key === view.lastTemplatesKey) return;
  view.lastTemplatesKey = key;
  const select = $("workflow");
  const current = select.value || preferred || "";
  select.textContent = "";
  if (!usable.length) select.append(new Option("No workflow yet (waiting for the host)", ""));
  for (const t of usable) {
    const opt = new Option(t.name, t.name);
    opt.title = t.description || "";
    select.append(opt);
  }
  if (usable.some((t) => t.name === current)) select.value = current;
  updateSendButton();
  refreshEstimate();
}

function updateSendButton() {
  const button = $("send-button");
  if (button.dataset.busy === "true") return;
  button.disabled = !$("workflow").value;
}

// ---- estimate and sending ------------------------------------------------------------------

async function refreshEstimate() {
  const template = $("workflow").value;
  const el = $("estimate");
  if (!template) return;
  if (view.state?.connection?.status !== "connected") {
    el.textContent = "Estimate: waiting for the host…";
    return;
  }
  const seq = ++view.estimateSeq;
  el.textContent = "Estimating…";
  try {
    const r = await call("estimate", { tabId: view.tabId, template });
    if (seq !== view.estimateSeq) return;
    $("page-info").textContent = r.page?.title ? `${r.page.title} · ${bytes(r.page.bytes || 0)}` : "";
    $("page-info").title = r.page?.url || "";
    el.textContent = describeEstimate(r.estimate) + (r.notice ? ` ${r.notice}` : "");
    el.dataset.code = "";
    renderWillSend($("sent"), r.estimate);
    mark("estimate-shown");
  } catch (err) {
    if (seq !== view.estimateSeq) return;
    el.textContent = `No estimate: ${err.message}`;
    el.dataset.code = err.code || "";
    renderWillSend($("sent"), null);
  }
}

function describeEstimate(e) {
  if (!e || !e.steps || !e.steps.length) return "Estimate: no model steps, no model cost.";
  const prompt = Number(e.total_prompt_tokens || 0);
  const out = e.steps.reduce((n, s) => n + Number(s.max_output_tokens || 0), 0);
  const toks = `${e.lower_bound ? "at least " : "~"}${prompt.toLocaleString("en-US")} prompt tokens`
    + (out ? ` + up to ${out.toLocaleString("en-US")} output` : "");
  let cost;
  if (e.price_unknown && e.unknown_cost_steps >= e.steps.length) cost = "cost unknown";
  else {
    const lo = usd(e.total_cost_min);
    const hi = usd(e.total_cost_max);
    cost = lo === hi ? lo : `${lo} – ${hi}`;
    if (e.price_unknown) cost += " + unknown";
  }
  const budget = e.budget_usd ? ` (run budget ${usdBudget(e.budget_usd)})` : "";
  return `Estimate: ${toks} · ${cost}${budget}`;
}

async function sendPage() {
  const template = $("workflow").value;
  if (!template) return;
  const button = $("send-button");
  const status = $("send-status");
  button.disabled = true;
  button.dataset.busy = "true";
  status.dataset.kind = "";
  status.textContent = "Sending…";
  mark("send-clicked");
  try {
    const r = await call("capture.page", { tabId: view.tabId, template });
    mark("run-created", { captureMs: r.captureMs, sendMs: r.sendMs, totalMs: r.totalMs, bytes: r.bytes, reused: r.reused });
    if (r.delivered) {
      status.dataset.kind = "ok";
      status.textContent = `Run started.${r.notice ? ` ${r.notice}` : ""}`;
      status.dataset.runId = r.result.run_id;
      refreshRuns();
    } else if (r.discarded) {
      status.dataset.kind = "";
      status.textContent = r.sent ? "Discarded; it had been sent already, so the host may have started its run."
        : "Discarded before it was sent.";
    } else {
      status.dataset.kind = "queued";
      status.textContent = `The host is not reachable; the page is kept and will be sent when it is back.`
        + `${r.notice ? ` ${r.notice}` : ""}`;
    }
  } catch (err) {
    status.dataset.kind = "error";
    status.textContent = `Not sent: ${err.message}`;
  } finally {
    button.dataset.busy = "false";
    updateSendButton();
  }
}

function renderLastCapture(c) {
  // A capture from the menu or shortcut that is still waiting: say so once, here.
  if (!c || $("send-status").textContent) return;
  if (c.queued && Date.now() - c.at < 60000) {
    $("send-status").dataset.kind = "queued";
    $("send-status").textContent = `Your last ${c.kind} is kept until the host is back.`;
  }
}

// ---- outbox ---------------------------------------------------------------------------------

// The background answers with headers only (title, URL, template, size, attempts): the pages
// stay in storage. Replies can cross: only the newest request's answer is drawn.
async function renderOutbox(count) {
  const seq = ++view.outboxSeq;
  $("outbox").hidden = !count;
  if (!count) return;
  $("outbox-text").textContent = `${count} capture${count === 1 ? "" : "s"} waiting; they are sent as soon as the host answers.`;
  let items;
  try {
    ({ items } = await call("outbox"));
  } catch {
    return; // the list is a detail; the count above is what matters
  }
  if (seq !== view.outboxSeq) return;
  const waiting = items.filter((i) => !i.refused).length;
  const refused = items.length - waiting;
  const parts = [];
  if (waiting) parts.push(`${waiting} capture${waiting === 1 ? "" : "s"} waiting; they are sent as soon as the host answers.`);
  if (refused) parts.push(`${refused} refused by the host (kept until you discard ${refused === 1 ? "it" : "them"} or send again).`);
  $("outbox-text").textContent = parts.join(" ");
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
    label.title = `Sent ${item.attempts} time${item.attempts === 1 ? "" : "s"} without an answer`
      + (item.last_error ? `: ${item.last_error}` : "");
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

async function refreshSpend() {
  try {
    const s = await call("spend");
    const budget = s.daily_budget_usd;
    const unpriced = Object.values(s.today_unpriced_steps || {}).reduce((a, b) => a + b, 0);
    $("spend-text").textContent = (budget
      ? `${usd(s.today)} of ${usdBudget(budget)} daily budget · this month ${usd(s.this_month)}`
      : `${usd(s.today)} today (no daily budget set) · this month ${usd(s.this_month)}`)
      + (s.today_estimated ? ` (≈${usd(s.today_estimated)} of today estimated)` : "")
      + (unpriced ? ` · ${unpriced} step${unpriced === 1 ? "" : "s"} today with unknown price, not counted` : "")
      + unconfirmedPhrase(s.today_unconfirmed, " today");
    $("spend-text").dataset.today = String(s.today);
    const meter = $("spend-meter");
    meter.hidden = !budget;
    if (budget) {
      const ratio = Math.min(1, s.today / budget);
      meter.querySelector("span").style.width = `${(ratio * 100).toFixed(1)}%`;
      meter.setAttribute("aria-valuemax", String(budget));
      meter.setAttribute("aria-valuenow", String(s.today));
      meter.setAttribute("aria-valuetext", `${usd(s.today)} of ${usdBudget(budget)}`);
      meter.dataset.over = String(s.today >= budget);
    }
  } catch (err) {
    $("spend-text").textContent = `Spend unavailable: ${err.message}`;
  }
}

// ---- runs list ------------------------------------------------------------------------------

async function refreshRuns() {
  try {
    const { runs } = await call("runs.list");
    for (const r of runs) view.runs.set(r.id, r);
    renderRuns();
    markOnce("runs-shown");
  } catch (err) {
    if (!view.runs.size) $("runs-empty").textContent = `Runs unavailable: ${err.message}`;
    $("runs-empty").hidden = view.runs.size > 0;
  }
}

function sortedRuns() {
  return [...view.runs.values()]
    .sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")))
    .slice(0, 20);
}

function renderRuns() {
  const list = $("run-list");
  const runs = sortedRuns();
  $("runs-empty").hidden = runs.length > 0;
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

function buildRow(id) {
  const li = document.createElement("li");
  li.dataset.runId = id;
  const b = document.createElement("button");
  b.type = "button";
  b.className = "run";
  b.innerHTML = `<span class="name"></span><span class="status"></span>
    <span class="progress" role="progressbar" aria-valuemin="0"><span></span></span>
    <span class="facts"><span class="steps-done"></span><span class="tokens"></span><span class="cost"></span><span class="age"></span></span>`;
  b.addEventListener("click", () => openDetail(id));
  li.append(b);
  return li;
}

function fillRow(li, run) {
  const b = li.firstElementChild;
  const done = Number(run.completed_steps || 0);
  const total = Number(run.total_steps || 0);
  const pct = total ? Math.round((100 * done) / total) : 0;
  const cost = runCost(run);
  li.dataset.status = run.status;
  b.querySelector(".name").textContent = run.name || run.template || run.id;
  const st = b.querySelector(".status");
  st.textContent = statusLabel(run.status);
  st.dataset.status = run.status;
  const bar = b.querySelector(".progress");
  bar.dataset.status = run.status;
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(done));
  bar.setAttribute("aria-valuetext", `${done} of ${total} steps (${pct}%)`);
  bar.setAttribute("aria-label", `Progress of ${run.name}`);
  bar.dataset.percent = String(pct);
  bar.firstElementChild.style.width = `${pct}%`;
  b.querySelector(".steps-done").textContent = `${done}/${total} steps`;
  b.querySelector(".tokens").textContent = tokens(run.total_tokens);
  const c = b.querySelector(".cost");
  c.textContent = cost.text;
  c.title = cost.title;
  c.dataset.cost = run.unknown_cost_steps > 0 && !run.total_cost ? "unknown" : String(run.total_cost ?? 0);
  b.querySelector(".age").textContent = age(run.createdAt);
  b.setAttribute("aria-label",
    `${run.name}: ${statusLabel(run.status)}, ${done} of ${total} steps, ${tokens(run.total_tokens)}, cost ${cost.text}, `
    + `started ${age(run.createdAt)}. Open details.`);
}

// ---- run detail -----------------------------------------------------------------------------

let detailTimer = null;
let returnFocusTo = null;

async function openDetail(runId, { keepFocus = false } = {}) {
  if (!keepFocus || view.detailId !== runId) {
    returnFocusTo = runId;
    view.output = null;
    $("output").textContent = "";
    $("output-note").textContent = "";
    $("copy-output").disabled = true;
  }
  view.detailId = runId;
  $("list-view").hidden = true;
  $("detail").hidden = false;
  if (!keepFocus) {
    const summary = view.runs.get(runId);
    $("detail-title").textContent = summary?.name || runId;
    $("detail-title").focus();
  }
  await loadDetail();
}

function closeDetail() {
  view.detailId = null;
  view.detailRun = null;
  $("detail").hidden = true;
  $("list-view").hidden = false;
  const li = returnFocusTo && view.rows.get(returnFocusTo);
  if (li) li.firstElementChild.focus();
  history.replaceState(null, "", location.pathname + location.search);
}

async function loadDetail() {
  const runId = view.detailId;
  if (!runId) return;
  let run;
  try {
    run = await call("runs.get", { run_id: runId });
  } catch (err) {
    $("detail-error").hidden = false;
    $("detail-error").textContent = `Could not load the run: ${err.message}`;
    return;
  }
  if (view.detailId !== runId) return;
  view.detailRun = run;
  renderDetail(run);
  if (isTerminalRun(run.status) && view.output === null) loadOutput(run);
}

function scheduleDetailReload() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(loadDetail, 250);
}

function renderDetail(run) {
  const m = run.metrics || {};
  const done = Number(m.completed_steps || 0);
  const total = Number(m.total_steps || (run.steps || []).length);
  const pct = total ? Math.round((100 * done) / total) : 0;
  $("detail-title").textContent = run.name;
  const st = $("detail-status");
  st.textContent = statusLabel(run.status);
  st.dataset.status = run.status;
  const cost = runCost({ total_cost: m.total_cost, unknown_cost_steps: m.unknown_cost_steps });
  const estimated = Number(m.estimated_cost_steps || 0) > 0 ? "≈" : "";
  $("detail-meta").textContent = `${done}/${total} steps · ${tokens(m.total_tokens)} · ${estimated}${cost.text}`
    + `${unconfirmedPhrase({ calls: m.unconfirmed_calls, cost_max: m.unconfirmed_cost_max })} · started ${age(run.createdAt)}`;
  $("detail-meta").title = estimated ? ESTIMATED_TITLE : "";
  $("detail-meta").dataset.cost = String(m.total_cost ?? 0);
  const bar = $("detail-progress");
  bar.dataset.status = run.status;
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(done));
  bar.setAttribute("aria-valuetext", `${done} of ${total} steps (${pct}%)`);
  bar.firstElementChild.style.width = `${pct}%`;
  $("detail-error").hidden = !run.error;
  $("detail-error").textContent = run.error || "";
  renderWasSent($("detail-sent"), run);
  const body = $("detail-steps");
  body.textContent = "";
  for (const s of run.steps || []) {
    const tr = document.createElement("tr");
    const em = s.execution_metrics || {};
    const stepCost = em.cost === null ? "unknown" : em.tokens || em.cost ? usd(em.cost) : "";
    const cells = [s.name || s.id, statusLabel(s.status), duration(s.duration), em.tokens ? tokens(em.tokens) : "",
      em.cost_estimated ? `≈${stepCost}` : stepCost];
    cells.forEach((text, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = text;
      if (i === 1) {
        td.className = "status";
        td.dataset.status = s.status;
      }
      if (i === 4 && em.cost_estimated) {
        td.className = "estimated";
        td.title = ESTIMATED_TITLE;
      }
      tr.append(td);
    });
    // A warning (an answer cut at max_tokens) is said on the step's row, not only in metadata.
    for (const text of s.warnings || []) {
      const note = document.createElement("span");
      note.className = "step-warning";
      note.textContent = `⚠ ${text}`;
      tr.firstElementChild.append(note);
    }
    if (s.error) tr.title = s.error;
    if (em.unconfirmed_calls) {
      tr.dataset.unconfirmed = String(em.unconfirmed_calls);
      tr.title = [tr.title, unconfirmedPhrase({ calls: em.unconfirmed_calls, cost_max: em.unconfirmed_cost_max }).slice(3)]
        .filter(Boolean).join("\n");
    }
    tr.dataset.stepId = s.id;
    body.append(tr);
  }
  const canRetry = run.status === RunStatus.FAILED || run.status === RunStatus.CANCELLED;
  view.retryBudget = canRetry ? budgetToGoOn(run) : null;
  $("retry-run").textContent = view.retryBudget ? `Retry with a ${usdBudget(view.retryBudget)} run budget` : "Retry";
  $("retry-run").hidden = !canRetry;
  $("cancel-run").hidden = isTerminalRun(run.status);
  if (!isTerminalRun(run.status)) $("output-note").textContent = "The output appears when the run completes.";
}

// A provider call that was sent but whose answer was never recorded (its worker died, its run
// was cancelled) may have been billed: say so, with the most it may have cost.
function unconfirmedPhrase(lost, when = "") {
  const n = Number(lost?.calls || 0);
  if (!n) return "";
  const bound = lost.cost_max === null || lost.cost_max === undefined ? "price unknown" : `up to ${usd(lost.cost_max)}`;
  return ` · ${n} unconfirmed call${n === 1 ? "" : "s"}${when}, may have been billed ${bound}`;
}

// A run stopped by its own budget goes on only with a bigger one: enough for what was spent,
// what was still running and the stopped step's upper bound, rounded up to the cent.
function budgetToGoOn(run) {
  if (run.error_code !== "budget_exceeded") return null;
  const stopped = (run.steps || []).find((s) => s.error_code === "budget_exceeded" && s.metadata?.budget);
  const b = stopped?.metadata.budget;
  if (!b || b.kind !== "run" || typeof b.step_cost_max_usd !== "number") return null;
  return Math.ceil(((b.spent_usd || 0) + (b.running_usd || 0) + b.step_cost_max_usd) * 100) / 100;
}

// The final step: one nothing else depends on, completed, last in template order.
function finalStep(run) {
  const steps = run.steps || [];
  const needed = new Set(steps.flatMap((s) => s.dependencies || []));
  const ends = steps.filter((s) => !needed.has(s.id) && s.status === StepStatus.COMPLETED);
  return ends[ends.length - 1] || [...steps].reverse().find((s) => s.status === StepStatus.COMPLETED) || null;
}

async function loadOutput(run) {
  const step = finalStep(run);
  if (!step) {
    $("output-note").textContent = "No step produced an output.";
    return;
  }
  $("output-note").textContent = `Loading the output of ${step.name || step.id}…`;
  try {
    const r = await call("runs.output", { run_id: run.id, step_id: step.id });
    const outputs = r.outputs || {};
    const text = typeof outputs.text === "string" ? outputs.text
      : typeof outputs.content === "string" ? outputs.content : JSON.stringify(outputs, null, 2);
    view.output = text;
    mark("output-loaded");
    const shown = text.length > OUTPUT_PREVIEW_CHARS ? text.slice(0, OUTPUT_PREVIEW_CHARS) : text;
    $("output").textContent = shown;
    $("output").dataset.length = String(text.length);
    $("output-note").textContent = `Output of ${step.name || step.id}, ${bytes(new Blob([text]).size)}`
      + (shown.length < text.length ? ` (showing the first ${bytes(shown.length)}; Copy copies all of it)` : "");
    $("copy-output").disabled = false;
  } catch (err) {
    $("output-note").textContent = `Could not load the output: ${err.message}`;
  }
}

async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    button.textContent = ok ? "Copied" : "Copy failed";
  }
  setTimeout(() => { button.textContent = label; }, 1500);
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
      if (view.detailId === msg.run.id) scheduleDetailReload();
      if (isTerminalRun(msg.run.status) && before && !isTerminalRun(before.status)) refreshSpend();
    }
  });
  // The background's service worker may be stopped and restarted: reconnect.
  port.onDisconnect.addListener(() => setTimeout(connectPort, 100));
}

async function start() {
  if (view.tabId === null) {
    try {
      const [tab] = await api.tabs.query({ active: true, currentWindow: true });
      if (tab && !String(tab.url || "").startsWith(location.origin)) view.tabId = tab.id;
    } catch {
      // the background falls back to the active tab
    }
  }
  $("send-button").addEventListener("click", sendPage);
  $("workflow").addEventListener("change", refreshEstimate);
  $("retry").addEventListener("click", () => call("connect").catch(() => {}));
  $("back").addEventListener("click", closeDetail);
  $("copy-output").addEventListener("click", (e) => view.output !== null && copyText(view.output, e.currentTarget));
  $("retry-run").addEventListener("click", async () => {
    const fields = { run_id: view.detailId };
    if (view.retryBudget) fields.budget_usd = view.retryBudget;
    await call("runs.retry", fields).catch((err) => alert(err.message));
    view.output = null;
    scheduleDetailReload();
  });
  $("cancel-run").addEventListener("click", async () => {
    await call("runs.cancel", { run_id: view.detailId }).catch((err) => alert(err.message));
    scheduleDetailReload();
  });
  for (const b of document.querySelectorAll("[data-copy]")) {
    b.addEventListener("click", () => copyText($(b.dataset.copy).textContent, b));
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && view.detailId) {
      e.preventDefault();
      closeDetail();
    }
  });
  setInterval(() => {
    renderRuns(); // ages
    if (view.state) renderConnection(view.state.connection);
  }, 1000);
  connectPort();
  const m = location.hash.match(/^#run=(.+)$/);
  if (m) openDetail(decodeURIComponent(m[1]));
}

start();
