// The send card: which workflow, what it would cost, whether each model step can start
// (pre-flight, with the fix inline), whether this page was sent before, and Send itself.

import { age, bytes, usd, usdBudget } from "../lib/format.js";
import { renderWillSend } from "./sent.js";
import { $, call, mark, pageOf, runTitle, setFavicon } from "./common.js";

const send = {
  estimateSeq: 0,
  estimate: null, // the last estimate shown: {template, estimate}
  sentEstimates: new Map(), // run id -> the estimate shown when it was sent (its steps' cost ranges)
  pageUrl: null,
  alreadyFor: null,
  statusTimer: null,
  tabId: null,
};
// The tab to estimate is known a moment after the popup opens; an estimate asked before
// waits for it (without it the background would read the active tab: the popup itself
// when it is opened as a tab).
let tabKnown;
const tabReady = new Promise((resolve) => { tabKnown = resolve; });

export function estimateFor(runId) {
  return send.sentEstimates.get(runId) || null;
}

// ---- estimate and pre-flight ----------------------------------------------------------------

// Asked from several places as the popup opens (templates listed, host connected, tab
// known): one request per workflow is enough, so an ask for the workflow already being
// estimated, or estimated a moment ago, joins it; `force` (the person chose a workflow) asks anew.
export function refreshEstimate(connected, { force = false } = {}) {
  const template = $("workflow").value;
  showReuseChoice();
  if (!template) return null;
  if (!connected) {
    showEstimateText("Estimate: waiting for the host…");
    return null;
  }
  const last = send.asked;
  if (!force && last && last.template === template && (last.pending || performance.now() - last.at < 2000)) {
    return last.promise;
  }
  const asked = { template, pending: true, at: performance.now() };
  asked.promise = estimate(template).finally(() => {
    asked.pending = false;
    asked.at = performance.now();
  });
  send.asked = asked;
  return asked.promise;
}

async function estimate(template) {
  const seq = ++send.estimateSeq;
  mark("estimate-asked");
  await tabReady;
  if (seq !== send.estimateSeq) return;
  if (!send.estimate || send.estimate.template !== template) showEstimateText("Estimating…");
  try {
    const r = await call("estimate", { tabId: send.tabId, template });
    if (seq !== send.estimateSeq) return;
    renderPage(r.page);
    renderEstimate(r.estimate);
    $("estimate").dataset.code = "";
    renderWillSend($("sent"), r.estimate);
    send.estimate = { template, estimate: r.estimate };
    const notice = $("page-notice");
    notice.hidden = !r.notice;
    notice.textContent = r.notice ? `⚠ ${r.notice}` : "";
    mark("estimate-shown", r.timing);
    if (r.page?.url && r.page.url !== send.pageUrl) {
      send.pageUrl = r.page.url;
      refreshAlreadySent(r.page.url);
    }
  } catch (err) {
    if (seq !== send.estimateSeq) return;
    showEstimateText(`No estimate: ${err.message}`);
    $("estimate").dataset.code = err.code || "";
    renderWillSend($("sent"), null);
  }
}

export function setTab(tabId) {
  send.tabId = tabId;
  tabKnown();
}

function showEstimateText(text) {
  $("estimate-cost").textContent = text;
  $("estimate-detail").textContent = "";
  $("preflight").textContent = "";
  delete $("estimate").dataset.ok;
}

function renderPage(page) {
  const box = $("page-info");
  box.hidden = !page?.title && !page?.url;
  $("page-title").textContent = page?.title || page?.url || "";
  $("page-title").title = page?.url || "";
  $("page-size").textContent = page?.bytes ? bytes(page.bytes) : "";
  setFavicon($("page-favicon"), pageOf({ page: { favicon: page?.favicon } }));
}

function costRange(e) {
  if (e.price_unknown && e.unknown_cost_steps >= e.steps.length) return "cost unknown";
  const lo = usd(e.total_cost_min);
  const hi = usd(e.total_cost_max);
  return (lo === hi ? lo : `${lo} – ${hi}`) + (e.price_unknown ? " + unknown" : "");
}

function renderEstimate(e) {
  const list = $("preflight");
  list.textContent = "";
  if (!e || !e.steps || !e.steps.length) {
    $("estimate-cost").textContent = "Estimate: no model steps, nothing to pay.";
    $("estimate-detail").textContent = "";
    $("estimate").dataset.ok = "true";
    return;
  }
  $("estimate-cost").textContent = `Estimate: ${costRange(e)}`;
  const prompt = Number(e.total_prompt_tokens || 0);
  const out = e.steps.reduce((n, s) => n + Number(s.max_output_tokens || 0), 0);
  const parts = [`${e.lower_bound ? "at least " : ""}${prompt.toLocaleString("en-US")} prompt tokens`];
  if (out) parts.push(`up to ${out.toLocaleString("en-US")} out`);
  if (e.budget_usd) parts.push(`run budget ${usdBudget(e.budget_usd)}`);
  const detail = $("estimate-detail");
  detail.textContent = "";
  parts.forEach((text, i) => {
    const part = document.createElement("span");
    part.className = "nowrap";
    part.textContent = text;
    detail.append(...(i ? [" · ", part] : [part]));
  });
  // Pre-flight (hosts that predate it send none: then nothing is listed).
  for (const step of e.steps) {
    const p = step.preflight;
    if (!p) continue;
    const li = document.createElement("li");
    li.dataset.ok = String(!!p.ok);
    li.dataset.stepId = step.step_id;
    const what = document.createElement("span");
    what.className = "check";
    what.textContent = `${p.ok ? "✓" : "✕"} ${step.step_id} · ${step.model || step.provider}`;
    li.append(what);
    const said = document.createElement("span");
    said.className = "said";
    said.textContent = p.ok ? okPhrase(step, p) : p.fix || "cannot start";
    li.append(said);
    // A risk the estimate sees but that does not stop the step (a reduce that may outgrow its
    // window once the answers it reads are in): said here, not only on the command line.
    if (step.warning && !(p.fix || "").includes(step.warning.slice(0, 60))) {
      const warn = document.createElement("span");
      warn.className = "step-warning";
      warn.textContent = `⚠ ${step.warning}`;
      li.append(warn);
    }
    if (!p.ok && (p.key_present === false || p.local_server === "not answering" || !p.within_daily_budget)) {
      const a = document.createElement("a");
      a.href = "../options/options.html";
      a.target = "_blank";
      a.textContent = "Open Settings";
      li.append(" ", a);
    }
    list.append(li);
  }
  if ("preflight_ok" in e) $("estimate").dataset.ok = String(!!e.preflight_ok);
  else delete $("estimate").dataset.ok;
  const overRun = e.steps.some((s) => s.preflight && s.preflight.within_run_budget === false);
  $("send-button").dataset.warn = String(overRun);
  $("send-button").textContent = overRun ? "Send anyway (will stop at its run budget)" : "Send page to workflow";
}

function okPhrase(step, p) {
  if (p.local_server === "answering") return "local server answering";
  if (p.key_present) return "key set";
  return "ready";
}

// ---- "already sent" -------------------------------------------------------------------------

async function refreshAlreadySent(url) {
  let runs;
  try {
    ({ runs } = await call("runs.for_url", { url }));
  } catch {
    return; // a host without runs.for_url: no card
  }
  if (url !== send.pageUrl) return;
  send.alreadyFor = Array.isArray(runs) ? runs : [];
  const card = $("already");
  card.hidden = !send.alreadyFor.length;
  const list = $("already-list");
  list.textContent = "";
  for (const r of send.alreadyFor.slice(0, 3)) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link-button";
    b.dataset.runId = r.run_id;
    const cost = r.cost_state === "unknown" || r.cost === null || r.cost === undefined ? "cost unknown"
      : `${r.cost_state === "estimated" ? "≈" : ""}${usd(r.cost)}`;
    b.textContent = `${r.workflow} · ${String(r.status || "").toLowerCase()} · ${age(r.finished_at)} · ${cost}`;
    b.title = runTitle({ ...r, name: r.workflow });
    b.addEventListener("click", () => send.onOpenRun?.(r.run_id));
    li.append(b);
    list.append(li);
  }
  showReuseChoice();
}

// Reuse is offered for the workflow chosen only when that workflow already completed this
// page: another workflow's result is not what Send would give, and would be a paid run.
function showReuseChoice() {
  const template = $("workflow").value;
  $("reuse-choice").hidden = !(send.alreadyFor || []).some((r) => r.status === "COMPLETED" && r.workflow === template);
}

// ---- sending --------------------------------------------------------------------------------

function setStatus(kind, text, { clearAfterMs = 0, runId = "" } = {}) {
  const status = $("send-status");
  clearTimeout(send.statusTimer);
  status.dataset.kind = kind;
  status.textContent = text;
  status.dataset.runId = runId;
  // A "started" or "sent" line is true for a moment; it must not stay to mislead later.
  if (clearAfterMs) send.statusTimer = setTimeout(() => setStatus("", ""), clearAfterMs);
}

export function clearQueuedStatus() {
  if ($("send-status").dataset.kind === "queued") setStatus("", "");
}

export async function sendPage({ onStarted }) {
  const template = $("workflow").value;
  if (!template) return;
  const button = $("send-button");
  button.disabled = true;
  button.dataset.busy = "true";
  setStatus("", "Sending…");
  mark("send-clicked");
  const fields = { tabId: send.tabId, template };
  if (!$("already").hidden && !$("reuse-choice").hidden) {
    fields.reuse = document.querySelector('input[name="reuse"]:checked')?.value || "reuse";
  }
  call("settings.set", { settings: { lastWorkflow: template } }).catch(() => {});
  try {
    const r = await call("capture.page", fields);
    mark("run-created", { captureMs: r.captureMs, sendMs: r.sendMs, totalMs: r.totalMs, bytes: r.bytes, reused: r.reused });
    if (r.delivered) {
      const runId = r.result.run_id;
      if (send.estimate?.template === template) send.sentEstimates.set(runId, send.estimate.estimate);
      const reused = r.result.reused_from;
      setStatus("ok", reused ? "Same page as before: reused its result at $0." : "Run started.",
                { clearAfterMs: 4000, runId });
      onStarted(runId);
    } else if (r.discarded) {
      setStatus("", r.sent ? "Discarded; it had been sent already, so the host may have started its run."
        : "Discarded before it was sent.", { clearAfterMs: 6000 });
    } else {
      setStatus("queued", "Kept; it is sent when the host is back.");
    }
  } catch (err) {
    setStatus("error", `Not sent: ${err.message}`);
  } finally {
    button.dataset.busy = "false";
  }
}

export function onOpenRun(handler) {
  send.onOpenRun = handler;
}
