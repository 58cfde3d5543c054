// A batch as one row of the popup's list: its items' progress in one bar, what it has cost so
// far, and pause, resume, cancel and "retry failed" (only its failed items run again); pages
// the host could not fetch because they sit behind a login are read in the browser instead. Its
// runs are not listed again as rows of their own. While one is under way the row asks the
// background for `batch.get` about once a second; the host's run events also trigger a look.
// Page titles are untrusted: text nodes only.

import { api } from "../lib/ext.js";
import { usd, usdBudget } from "../lib/format.js";
import { $, call, mark } from "./common.js";

const POLL_MS = 1000;
const SHOWN = 5;
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const STATUS_TEXT = {
  running: "Running", paused: "Paused", stopped: "Stopped", cancelled: "Cancelled", completed: "Done",
  failed: "Failed", waiting_for_browser: "Needs the browser",
};
const ITEM_TEXT = { waiting: "waiting", duplicate: "duplicate", needs_browser: "needs the browser", unreadable: "unreadable",
                    blocked: "not sent: its site is ruled never" };
const RUN_TEXT = { PENDING: "waiting", RUNNING: "running", COMPLETED: "done", FAILED: "failed", CANCELLED: "cancelled" };

const rows = {
  batches: new Map(), // id -> the batch as batch.get gives it
  elements: new Map(), // id -> <li>
  runIds: new Set(),
  timer: null,
  loading: null,
  onOpenRun: null,
  onChange: null,
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// The runs that belong to a shown batch: the plain list leaves them out.
export function batchRunIds() {
  return rows.runIds;
}

// Not finished: it can still be paused or cancelled.
function active(b) {
  return !FINISHED.has(b.status) || (b.counts?.running || 0) > 0;
}

// Changing by itself: worth looking at again (a paused batch with nothing running is not).
function moving(b) {
  return b.status === "running" || (b.counts?.running || 0) > 0;
}

export function refreshBatches() {
  if (!rows.loading) rows.loading = load().finally(() => { rows.loading = null; });
  return rows.loading;
}

async function load() {
  let listed;
  try {
    ({ batches: listed } = await call("batch.list", { limit: SHOWN }));
  } catch {
    return; // a host without batches, or away: the plain list says the rest
  }
  const fresh = new Map();
  await Promise.all((listed || []).map(async (b) => {
    const before = rows.batches.get(b.id);
    // Items are asked for while it runs, and once when first seen.
    const full = !before || moving(b) || moving(before) ? await call("batch.get", { batch_id: b.id }).catch(() => null) : null;
    fresh.set(b.id, full || { ...b, items: before?.items || [] });
  }));
  rows.batches = fresh;
  rows.runIds = new Set([...fresh.values()].flatMap((b) => (b.items || []).map((i) => i.run_id).filter(Boolean)));
  render();
  schedule();
}

function schedule() {
  clearTimeout(rows.timer);
  if ([...rows.batches.values()].some(moving)) rows.timer = setTimeout(refreshBatches, POLL_MS);
}

// A run event for a run of a batch (or a new run while a batch is making them): look again soon.
export function noteRunUpdated(runId) {
  const mine = rows.runIds.has(runId) || [...rows.batches.values()].some(moving);
  if (mine && !rows.loading) {
    clearTimeout(rows.timer);
    rows.timer = setTimeout(refreshBatches, 150);
  }
}

function render() {
  const list = $("batch-list");
  const ordered = [...rows.batches.values()].sort((a, b) => String(b.created_at || "").localeCompare(String(a.created_at || "")));
  for (const [id, li] of rows.elements) {
    if (!rows.batches.has(id)) {
      li.remove();
      rows.elements.delete(id);
    }
  }
  ordered.forEach((b, i) => {
    let li = rows.elements.get(b.id);
    if (!li) {
      li = build(b.id);
      rows.elements.set(b.id, li);
    }
    fill(li, b);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  rows.onChange?.();
  if (ordered.length) mark("batches-shown");
}

function button(text, cls, action) {
  const b = el("button", `small ${cls}`, text);
  b.type = "button";
  b.dataset.action = action;
  return b;
}

function build(id) {
  const li = el("li", "batch-row");
  li.dataset.batchId = id;
  const head = el("div", "head");
  head.append(el("span", "name"), el("span", "status"));
  const bar = el("div", "segments");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  for (const k of ["completed", "failed", "running", "other"]) bar.append(el("span", k));
  const facts = el("div", "facts");
  for (const k of ["n-done", "n-failed", "n-open", "cost", "budget", "said"]) facts.append(el("span", k));
  const actions = el("div", "actions");
  actions.append(button("Read in the browser", "take-over", "batch.take_over"),
                 button("Pause", "pause", "batch.pause"), button("Resume", "resume", "batch.resume"),
                 button("Retry failed", "retry", "batch.retry_failed"), button("Cancel", "cancel", "batch.cancel"));
  for (const b of actions.children) b.addEventListener("click", () => steer(id, b));
  const details = el("details", "items-box");
  details.append(el("summary", "", "Pages"), el("ul", "batch-items"));
  details.addEventListener("toggle", () => {
    if (details.open) refreshBatches();
  });
  li.append(head, bar, facts, actions, details);
  return li;
}

// Reading pages behind a login needs access to their sites: asked for inside the click.
function askForSites(id) {
  const origins = new Set();
  for (const it of rows.batches.get(id)?.items || []) {
    if (it.state !== "needs_browser") continue;
    try {
      const u = new URL(it.source);
      if (["http:", "https:"].includes(u.protocol)) origins.add(`${u.protocol}//${u.hostname}/*`);
    } catch {
      // not an address: the background says so
    }
  }
  return origins.size ? api.permissions.request({ origins: [...origins] }) : Promise.resolve(true);
}

function steer(id, b) {
  const asked = b.dataset.action === "batch.take_over" ? askForSites(id) : Promise.resolve(true);
  asked.then((ok) => {
    if (ok) return act(id, b);
    rows.elements.get(id).querySelector(".said").textContent = "Not read: access to those sites was not given.";
    return null;
  }, (err) => {
    rows.elements.get(id).querySelector(".said").textContent = err.message;
  });
}

async function act(id, b) {
  b.disabled = true;
  try {
    const result = await call(b.dataset.action, { batch_id: id });
    rows.batches.set(id, { ...rows.batches.get(id), ...result });
    const said = rows.elements.get(id).querySelector(".said");
    said.textContent = "";
    if (b.dataset.action === "batch.retry_failed") mark("batch-retried", { retried: result.retried });
    if (result.failed?.length) {
      said.textContent = `${result.filled} read; ${result.failed.length} could not be: ${result.failed[0].reason}`;
    }
  } catch (err) {
    rows.elements.get(id).querySelector(".said").textContent = `${b.textContent} failed: ${err.message}`;
  } finally {
    b.disabled = false;
  }
  await refreshBatches();
}

function share(n, total) {
  return total ? `${(100 * n) / total}%` : "0%";
}

function fill(li, b) {
  const c = b.counts || {};
  const total = Number(c.total || 0);
  const finished = Number(c.completed || 0) + Number(c.failed || 0) + Number(c.cancelled || 0)
    + Number(c.duplicate || 0) + Number(c.unreadable || 0) + Number(c.blocked || 0);
  li.dataset.status = b.status;
  li.dataset.state = b.state;
  li.querySelector(".name").textContent = b.name || b.template || b.id;
  const st = li.querySelector(".status");
  st.textContent = STATUS_TEXT[b.status] || b.status;
  st.dataset.status = b.status;
  const bar = li.querySelector(".segments");
  bar.querySelector(".completed").style.width = share(c.completed || 0, total);
  bar.querySelector(".failed").style.width = share(c.failed || 0, total);
  bar.querySelector(".running").style.width = share(c.running || 0, total);
  bar.querySelector(".other").style.width = share((c.duplicate || 0) + (c.unreadable || 0) + (c.blocked || 0) + (c.cancelled || 0), total);
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(finished));
  bar.setAttribute("aria-valuetext", `${finished} of ${total} pages finished`);
  bar.setAttribute("aria-label", `Progress of ${b.name || "the batch"}`);
  li.querySelector(".n-done").textContent = `${c.completed || 0}/${total} done`;
  const failed = li.querySelector(".n-failed");
  failed.textContent = c.failed ? `${c.failed} failed` : "";
  failed.hidden = !c.failed;
  const running = li.querySelector(".n-open");
  const open = Number(c.running || 0) + Number(c.waiting || 0);
  running.textContent = open ? `${open} to go` : "";
  running.hidden = !open;
  const cost = li.querySelector(".cost");
  // A call answered at a price not known cost something: "unknown", never "$0".
  const spent = !Number(b.unknown_cost_steps || 0) ? usd(b.cost_usd)
    : b.cost_usd ? `${usd(b.cost_usd)} + unknown` : "unknown";
  cost.textContent = `${FINISHED.has(b.status) ? "" : "so far "}${spent}`;
  cost.dataset.cost = String(b.cost_usd ?? "");
  const budget = li.querySelector(".budget");
  budget.textContent = b.budget_usd ? `budget ${usdBudget(b.budget_usd)}` : "";
  if (b.state === "stopped" && b.budget_usd) budget.textContent = `stopped by its budget of ${usdBudget(b.budget_usd)}`;
  const behindLogin = Number(c.needs_browser || 0);
  li.querySelector("button.take-over").textContent = `Read ${behindLogin} in the browser`;
  const can = {
    "batch.take_over": behindLogin > 0 && b.state !== "cancelled",
    "batch.pause": b.state === "running" && active(b),
    "batch.resume": (b.state === "paused" || b.state === "stopped") && b.status !== "cancelled",
    "batch.retry_failed": !!c.failed && b.state !== "cancelled",
    "batch.cancel": b.state !== "cancelled" && active(b),
  };
  for (const btn of li.querySelectorAll(".actions button")) {
    btn.hidden = !can[btn.dataset.action];
    btn.setAttribute("aria-label", `${btn.textContent}: ${b.name || "the batch"}`);
  }
  const items = li.querySelector(".batch-items");
  items.textContent = "";
  for (const it of b.items || []) items.append(itemRow(it));
  li.querySelector(".items-box summary").textContent = `${total} page${total === 1 ? "" : "s"}`;
}

function itemRow(it) {
  const li = el("li");
  li.dataset.pos = String(it.pos);
  li.dataset.state = it.run_status || it.state;
  const title = it.title || it.source || "";
  const name = it.run_id ? el("button", "link-button title", title) : el("span", "title", title);
  if (it.run_id) {
    name.type = "button";
    name.addEventListener("click", () => rows.onOpenRun?.(it.run_id));
  }
  name.title = it.source || "";
  const status = it.state === "started" ? RUN_TEXT[it.run_status] || String(it.run_status || "").toLowerCase()
    : ITEM_TEXT[it.state] || it.state;
  const st = el("span", "status", status);
  st.dataset.status = it.state === "started" ? it.run_status : it.state;
  if (it.error || it.note) st.title = it.error || it.note;
  li.append(name, st, el("span", "item-cost", it.run_id ? usd(it.cost_usd) : ""));
  return li;
}

export function wireBatchRows({ onOpenRun, onChange }) {
  rows.onOpenRun = onOpenRun;
  rows.onChange = onChange;
}
