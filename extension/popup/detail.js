// A run's detail: the result first (its final output as Markdown, with Copy, Save .md and
// Open in a tab), or, for a run that failed, every error before anything else; then the
// run's page, times and cost; the steps last, each with its attempts, retries, crash
// restarts and unconfirmed calls.

import { renderMarkdown, safeHref } from "../lib/markdown.js";
import { outputText, saveMarkdown } from "../lib/result.js";
import { api } from "../lib/ext.js";
import { bytes, duration, runCost, statusLabel, tokens, unconfirmedPhrase, usd, usdBudget } from "../lib/format.js";
import { RunStatus, StepStatus, isTerminalRun } from "../lib/states.js";
import { $, call, copyText, mark, pageOf, runTitle, setFavicon } from "./common.js";
import { liveLine } from "./live.js";
import { estimateFor } from "./send.js";
import { renderWasSent } from "./sent.js";

const OUTPUT_PREVIEW_CHARS = 100000;
const ESTIMATED_TITLE = "Estimated from our own token count: the provider reported no usable token usage";

const detail = { id: null, run: null, output: null, outputStep: null, timer: null, returnFocusTo: null,
                 retryBudget: null, onClose: null };

export function detailId() {
  return detail.id;
}

export async function openDetail(runId, { keepFocus = false, summary = null } = {}) {
  if (!keepFocus || detail.id !== runId) {
    detail.returnFocusTo = runId;
    detail.output = null;
    detail.run = null;
    $("output").textContent = "";
    $("output-note").textContent = "";
    $("result").hidden = true;
    $("detail-errors").hidden = true;
    for (const id of ["copy-output", "save-output", "open-output"]) $(id).disabled = true;
  }
  detail.id = runId;
  $("list-view").hidden = true;
  $("detail").hidden = false;
  if (!keepFocus) {
    $("detail-title").textContent = summary ? runTitle(summary) : runId;
    $("detail-title").focus();
  }
  await loadDetail();
}

function closeDetail() {
  detail.id = null;
  detail.run = null;
  $("detail").hidden = true;
  $("list-view").hidden = false;
  detail.onClose?.(detail.returnFocusTo);
  history.replaceState(null, "", location.pathname + location.search);
}

async function loadDetail() {
  const runId = detail.id;
  if (!runId) return;
  let run;
  try {
    run = await call("runs.get", { run_id: runId });
  } catch (err) {
    showErrors([`Could not load the run: ${err.message}`]);
    return;
  }
  if (detail.id !== runId) return;
  detail.run = run;
  renderDetail(run);
  if (run.status === RunStatus.COMPLETED && detail.output === null) loadOutput(run);
}

export function scheduleDetailReload(runId) {
  if (runId !== undefined && runId !== detail.id) return;
  clearTimeout(detail.timer);
  detail.timer = setTimeout(loadDetail, 250);
}

// The live line (elapsed time, the running step's expected cost) ticks every second.
export function tickDetail() {
  if (detail.run && !isTerminalRun(detail.run.status)) renderLive(detail.run);
}

// ---- rendering --------------------------------------------------------------------------------

function sourceOf(run) {
  const page = pageOf(run);
  if (page.url || page.title) return page;
  // Before runs carried their page: the capture step's own outputs say where it came from.
  const capture = (run.steps || []).find((s) => s.action === "capture" && s.outputs);
  const o = capture?.outputs || {};
  return pageOf({ page: { title: o.title, url: o.source_url } });
}

// A time as people say it: today's as the time alone, another day's with its date.
function when(iso, now = new Date()) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? d.toLocaleTimeString(undefined, { timeStyle: "short" })
    : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// A step stopped by a budget did not fail at anything: it was not started.
function stepLabel(s) {
  if (s.error_code === "budget_exceeded") return "Stopped (budget)";
  return statusLabel(s.status);
}

function runLabel(run) {
  if (run.error_code === "budget_exceeded") return "Stopped by budget";
  return statusLabel(run.status);
}

// An error as the popup says it: "Not started" is a stop, not a failure, and the CLI command
// the host suggests to go on is the Retry button here.
function plainError(text) {
  return String(text || "").replace(/^Not started: /, "Stopped before it started: ")
    .replace(/\s*To go on: `?hybrid-engine [^`]*`?\.?\s*$/, "").trim();
}

// Every error of the run, each step's first, then the run's own unless it only repeats one.
function errorsOf(run) {
  const raw = [];
  const out = [];
  for (const s of run.steps || []) {
    if (!s.error || s.status !== StepStatus.FAILED) continue;
    const t = plainError(s.error);
    if (!t || out.some((o) => o.endsWith(t))) continue;
    raw.push(String(s.error).replace(/^Not started: /, ""));
    out.push(`${s.name || s.id}: ${t}`);
  }
  const own = plainError(run.error);
  const repeats = raw.some((r) => String(run.error || "").includes(r.slice(0, 60)));
  if (own && !repeats) out.push(own);
  return out;
}

function showErrors(list) {
  const ul = $("detail-error-list");
  ul.textContent = "";
  for (const text of list) {
    const li = document.createElement("li");
    li.textContent = text;
    ul.append(li);
  }
  $("detail-errors").hidden = !list.length;
}

function renderDetail(run) {
  renderWasSent($("detail-sent"), run);
  const m = run.metrics || {};
  const done = Number(m.completed_steps || 0);
  const total = Number(m.total_steps || (run.steps || []).length);
  const pct = total ? Math.round((100 * done) / total) : 0;
  const page = sourceOf(run);
  $("detail-title").textContent = page.title || run.name;
  $("detail-title").title = page.title || run.name; // the whole of a title cut to a few lines
  setFavicon($("detail-favicon"), page);
  const link = $("detail-link");
  $("detail-source").hidden = !page.url;
  const href = safeHref(page.url);
  if (href) {
    link.href = href;
  } else {
    link.removeAttribute("href");
  }
  link.textContent = page.url ? `${page.site || page.url} ↗` : "";
  link.title = page.url || "";
  const st = $("detail-status");
  st.textContent = runLabel(run);
  // A budget stop reads in the same colour as its step's STOPPED (BUDGET), not as a failure.
  st.dataset.status = run.error_code === "budget_exceeded" ? "STOPPED" : run.status;
  const terminal = isTerminalRun(run.status);
  const cost = runCost({ total_cost: m.total_cost, unknown_cost_steps: m.unknown_cost_steps });
  const estimated = Number(m.estimated_cost_steps || 0) > 0 ? "≈" : "";
  const facts = [];
  if (terminal) facts.push(`${estimated}${cost.text}`, Number(m.total_tokens) ? tokens(m.total_tokens) : "");
  else facts.push(`${done}/${total} steps`);
  if (page.title) facts.push(run.name);
  if (terminal && run.updatedAt) {
    const took = m.duration_ms !== null && m.duration_ms !== undefined ? `\u00a0(took\u00a0${duration(m.duration_ms / 1000).replace(" ", "\u00a0")})` : "";
    facts.push(`${run.status === RunStatus.COMPLETED ? "finished" : "ended"} ${when(run.updatedAt)}${took}`);
  } else {
    facts.push(`started ${when(run.createdAt)}`);
  }
  $("detail-meta").textContent = facts.filter(Boolean).join(" · ") + unconfirmedPhrase({ calls: m.unconfirmed_calls, cost_max: m.unconfirmed_cost_max });
  $("detail-meta").title = estimated ? ESTIMATED_TITLE : "";
  $("detail-meta").dataset.cost = String(m.total_cost ?? 0);
  const bar = $("detail-progress");
  bar.hidden = terminal;
  bar.dataset.status = run.status;
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(done));
  bar.setAttribute("aria-valuetext", `${done} of ${total} steps (${pct}%)`);
  bar.firstElementChild.style.width = `${pct}%`;
  renderLive(run);

  // A run that did not complete shows what went wrong, all of it, and never an
  // intermediate step's text as if it were the result.
  const failed = terminal && run.status !== RunStatus.COMPLETED;
  showErrors(failed ? errorsOf(run) : []);
  $("errors-title").textContent = run.error_code === "budget_exceeded" ? "Why it stopped" : "What went wrong";
  $("detail-errors").dataset.kind = run.error_code === "budget_exceeded" ? "stop" : "error";
  if (failed) {
    $("result").hidden = true;
    $("steps-box").open = true;
  }
  $("detail-waiting").hidden = terminal;
  if (!terminal) $("detail-waiting").textContent = "The result appears here when the run completes.";
  renderSteps(run);
  const canRetry = run.status === RunStatus.FAILED || run.status === RunStatus.CANCELLED;
  detail.retryBudget = canRetry ? budgetToGoOn(run) : null;
  $("retry-run").textContent = detail.retryBudget ? `Retry with a ${usdBudget(detail.retryBudget)} run budget` : "Retry";
  $("retry-run").hidden = !canRetry;
  $("cancel-run").hidden = terminal;
}

function renderLive(run) {
  const el = $("detail-live");
  const text = isTerminalRun(run.status) ? "" : liveLine(run, estimateFor(run.id));
  el.hidden = !text;
  el.textContent = text;
}

// The time a step took, first attempt to last: a step that retried for 15 s did not take
// the 4 ms of its last attempt.
function stepTime(s) {
  const calls = s.calls || [];
  const first = calls.map((c) => Date.parse(c.sent_at)).filter(Number.isFinite).sort((a, b) => a - b)[0];
  const end = Date.parse(s.endTime);
  const span = first && Number.isFinite(end) ? Math.max(0, (end - first) / 1000) : null;
  const d = s.duration;
  if (span !== null && (d === null || d === undefined || span > d)) return duration(span);
  return duration(d);
}

function stepFacts(s) {
  const em = s.execution_metrics || {};
  const facts = [];
  const attempts = Number(em.attempts || 0);
  const retries = attempts - 1;
  if (retries > 0) facts.push(`${attempts} attempts (${retries} retr${retries === 1 ? "y" : "ies"})`);
  if (em.crash_recoveries) facts.push(`${em.crash_recoveries} crash restart${em.crash_recoveries === 1 ? "" : "s"}`);
  if (em.unconfirmed_calls) {
    facts.push(`${em.unconfirmed_calls} unconfirmed call${em.unconfirmed_calls === 1 ? "" : "s"}`
      + (em.unconfirmed_cost_max === null || em.unconfirmed_cost_max === undefined ? " (price unknown)"
        : ` (may have been billed up to ${usd(em.unconfirmed_cost_max)})`));
  }
  return facts;
}

function renderSteps(run) {
  const body = $("detail-steps");
  body.textContent = "";
  for (const s of run.steps || []) {
    const tr = document.createElement("tr");
    const em = s.execution_metrics || {};
    const stepCost = em.cost === null ? "unknown" : em.tokens || em.cost ? usd(em.cost) : "";
    const cells = [s.name || s.id, stepLabel(s), stepTime(s), em.tokens ? tokens(em.tokens) : "",
      em.cost_estimated ? `≈${stepCost}` : stepCost];
    cells.forEach((text, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = text;
      if (i === 1) {
        td.className = "status";
        td.dataset.status = s.error_code === "budget_exceeded" ? "STOPPED" : s.status;
      }
      if (i === 4 && em.cost_estimated) {
        td.className = "estimated";
        td.title = ESTIMATED_TITLE;
      }
      tr.append(td);
    });
    const notes = [...stepFacts(s).map((t) => ["fact", t]), ...(s.warnings || []).map((t) => ["warning", `⚠ ${t}`])];
    for (const [kind, text] of notes) {
      const note = document.createElement("span");
      note.className = `step-${kind}`;
      note.textContent = text;
      tr.firstElementChild.append(note);
    }
    if (em.unconfirmed_calls) tr.dataset.unconfirmed = String(em.unconfirmed_calls);
    tr.dataset.stepId = s.id;
    body.append(tr);
  }
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
  return ends[ends.length - 1] || null;
}

async function loadOutput(run) {
  const step = finalStep(run);
  $("result").hidden = false;
  if (!step) {
    $("output-note").textContent = "The run completed without a final output.";
    return;
  }
  $("output-note").textContent = "Loading the result…";
  try {
    const r = await call("runs.output", { run_id: run.id, step_id: step.id });
    if (detail.id !== run.id) return;
    const text = outputText(r.outputs);
    detail.output = text;
    detail.outputStep = step;
    const shown = text.length > OUTPUT_PREVIEW_CHARS ? text.slice(0, OUTPUT_PREVIEW_CHARS) : text;
    const out = $("output");
    out.textContent = "";
    out.append(renderMarkdown(shown));
    out.dataset.length = String(text.length);
    $("output-note").textContent = `${step.name || step.id} · ${bytes(new Blob([text]).size)}`
      + (shown.length < text.length ? ` (showing the first ${bytes(shown.length)}; Copy, Save and Open take all of it)` : "");
    for (const id of ["copy-output", "save-output", "open-output"]) $(id).disabled = false;
    mark("output-loaded");
  } catch (err) {
    $("output-note").textContent = `Could not load the result: ${err.message}`;
  }
}

// ---- result actions -------------------------------------------------------------------------

function saveOutput() {
  if (detail.output === null || !detail.run) return;
  saveMarkdown(detail.output, runTitle(detail.run));
}

function openOutput() {
  if (!detail.run || !detail.outputStep) return;
  const q = new URLSearchParams({ run: detail.run.id, step: detail.outputStep.id });
  api.tabs.create({ url: api.runtime.getURL(`result/result.html#${q}`) });
}

export function wireDetail({ onClose }) {
  detail.onClose = onClose;
  $("back").addEventListener("click", closeDetail);
  $("copy-output").addEventListener("click", (e) => detail.output !== null && copyText(detail.output, e.currentTarget));
  $("save-output").addEventListener("click", saveOutput);
  $("open-output").addEventListener("click", openOutput);
  $("retry-run").addEventListener("click", async () => {
    const fields = { run_id: detail.id };
    if (detail.retryBudget) fields.budget_usd = detail.retryBudget;
    try {
      await call("runs.retry", fields);
    } catch (err) {
      showErrors([`Retry failed: ${err.message}`]);
      return;
    }
    detail.output = null;
    scheduleDetailReload();
  });
  $("cancel-run").addEventListener("click", async () => {
    try {
      await call("runs.cancel", { run_id: detail.id });
    } catch (err) {
      showErrors([`Cancel failed: ${err.message}`]);
      return;
    }
    scheduleDetailReload();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && detail.id) {
      e.preventDefault();
      closeDetail();
    }
  });
}
