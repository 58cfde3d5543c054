// The library: every run with its page and result, searched and filtered by the host's
// full-text index. It renders and sends intents; the background owns the native port
// (messages {type, ...} as the popup sends them). Page titles, URLs, snippets and favicons
// are untrusted: they are set as text or as checked attributes, never as markup.

import { api } from "../lib/ext.js";
import { age, bytes, runCost, statusLabel } from "../lib/format.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 50;
const MARK_START = "\u0002";
const MARK_END = "\u0003";

const view = { offset: 0, total: 0, seq: 0, timer: null };

async function call(type, fields = {}) {
  const reply = await api.runtime.sendMessage({ type, ...fields });
  if (!reply) throw new Error("no answer from the background");
  if (!reply.ok) throw Object.assign(new Error(reply.error?.message || "failed"), { code: reply.error?.code });
  return reply.result;
}

function showError(err) {
  $("error").hidden = !err;
  $("error").textContent = err ? err.message || String(err) : "";
}

function filters() {
  const out = {};
  const query = $("query").value.trim();
  if (query) out.query = query;
  for (const id of ["workflow", "site", "status", "since", "until"]) {
    const value = $(id).value.trim();
    if (value) out[id] = value;
  }
  return out;
}

// A snippet with its matches between U+0002 and U+0003: text nodes and <mark>s.
function snippetNodes(snippet) {
  const nodes = [];
  let marked = false;
  for (const part of String(snippet).split(/([\u0002\u0003])/)) {
    if (part === MARK_START) marked = true;
    else if (part === MARK_END) marked = false;
    else if (part) {
      if (marked) {
        const mark = document.createElement("mark");
        mark.textContent = part;
        nodes.push(mark);
      } else {
        nodes.push(document.createTextNode(part));
      }
    }
  }
  return nodes;
}

// Only what the host kept (http(s) or data:image), checked again before it becomes a src.
// Only an inline raster image, as in the popup: a favicon URL comes from the page, and
// loading it would be a request the page chose (an SVG is left out with it).
function safeIcon(url) {
  return typeof url === "string" && /^data:image\/(png|x-icon|vnd\.microsoft\.icon|gif|jpeg|webp);base64,/i.test(url)
    ? url : null;
}

function safeLink(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
}

function label(run) {
  const title = (run.page?.title || "").replace(/\s+/g, " ").trim();
  return title || run.name || run.template || run.id;
}

function button(text, action, extra = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.action = action;
  Object.assign(b, extra);
  return b;
}

function row(run) {
  const li = document.createElement("li");
  li.dataset.runId = run.id;
  li.dataset.status = run.status;
  const icon = safeIcon(run.page?.favicon);
  if (icon) {
    const img = document.createElement("img");
    img.className = "favicon";
    img.alt = "";
    img.referrerPolicy = "no-referrer";
    img.src = icon;
    li.append(img);
  } else {
    li.append(document.createElement("span"));
  }
  const title = document.createElement("a");
  title.className = "title";
  title.dir = "auto"; // a right-to-left title reads in its own direction
  title.textContent = label(run);
  title.href = api.runtime.getURL(`popup/popup.html#run=${encodeURIComponent(run.id)}`);
  title.target = "_blank";
  title.title = "Open the result";
  li.append(title);

  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(button("Open", "open"));
  if (run.status !== "RUNNING" && run.status !== "PENDING") actions.append(button("Re-run", "rerun"));
  actions.append(button("Delete", "delete", { className: "danger" }));
  li.append(actions);

  const meta = document.createElement("div");
  meta.className = "meta";
  const site = run.page?.site;
  const link = safeLink(run.page?.url);
  if (link) {
    const a = document.createElement("a");
    a.className = "source";
    a.href = link;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = site || "source";
    meta.append(a);
  }
  const parts = [["workflow", run.template], ["status", statusLabel(run.status)], ["cost", runCost(run).text],
                 ["date", age(run.createdAt)]];
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    if (cls === "status") span.dataset.status = run.status;
    if (cls === "date") span.title = run.createdAt || "";
    meta.append(span);
  }
  li.append(meta);

  if (run.snippet) {
    const p = document.createElement("p");
    p.className = "snippet";
    p.append(...snippetNodes(run.snippet));
    li.append(p);
  } else if (run.error) {
    const p = document.createElement("p");
    p.className = "snippet error";
    p.textContent = run.error;
    li.append(p);
  }
  return li;
}

async function search({ append = false } = {}) {
  const seq = ++view.seq;
  const offset = append ? view.offset : 0;
  $("app").setAttribute("aria-busy", "true");
  try {
    const found = await call("library.search", { ...filters(), limit: PAGE_SIZE, offset });
    if (seq !== view.seq) return; // a newer search is on its way
    showError(null);
    if (!append) $("results").replaceChildren();
    $("results").append(...found.runs.map(row));
    view.offset = offset + found.runs.length;
    view.total = found.total;
    renderCount();
  } catch (err) {
    if (seq === view.seq) showError(err);
  } finally {
    if (seq === view.seq) $("app").setAttribute("aria-busy", "false");
  }
}

function renderCount() {
  const shown = $("results").children.length;
  const n = view.total;
  $("count").textContent = n === 0 ? (filters().query ? "No run matches." : "No runs yet. Send a page from the toolbar button to start one.")
    : `${n} run${n === 1 ? "" : "s"}${shown < n ? `, ${shown} shown` : ""}`;
  $("more").hidden = shown >= n;
}

async function loadStats() {
  try {
    const s = await call("library.stats");
    const keep = s.retention_days ? `raw pages kept ${s.retention_days} days` : "raw pages kept with their runs";
    $("stats").textContent = `${s.runs} run${s.runs === 1 ? "" : "s"} · store ${bytes(s.db_bytes)}`
      + ` · raw pages ${bytes(s.captures_bytes)} · ${keep}`;
  } catch (err) {
    $("stats").textContent = "";
    showError(err);
  }
}

async function loadWorkflows() {
  try {
    const { templates } = await call("templates.list");
    const select = $("workflow");
    for (const t of templates || []) {
      const option = document.createElement("option");
      option.value = t.name;
      option.textContent = t.name;
      select.append(option);
    }
  } catch {
    // The filter stays at "All"; the search itself reports a missing host.
  }
}

async function act(li, action, btn) {
  const runId = li.dataset.runId;
  if (action === "open") {
    await api.tabs.create({ url: api.runtime.getURL(`popup/popup.html#run=${encodeURIComponent(runId)}`) });
  } else if (action === "rerun") {
    btn.disabled = true;
    const started = await call("runs.rerun", { run_id: runId });
    btn.textContent = "Started";
    await search();
    return started;
  } else if (action === "delete") {
    if (btn.dataset.confirm !== "1") { // a second click confirms: a delete cannot be undone
      btn.dataset.confirm = "1";
      btn.textContent = "Delete for good?";
      setTimeout(() => { if (btn.isConnected) { btn.dataset.confirm = ""; btn.textContent = "Delete"; } }, 5000);
      return null;
    }
    btn.disabled = true;
    await call("runs.delete", { run_id: runId });
    li.remove();
    view.total = Math.max(0, view.total - 1);
    view.offset = Math.max(0, view.offset - 1);
    renderCount();
    loadStats();
  }
  return null;
}

function schedule() {
  clearTimeout(view.timer);
  view.timer = setTimeout(() => search(), 200);
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("query").addEventListener("input", schedule);
for (const id of ["workflow", "status", "since", "until"]) $(id).addEventListener("change", () => search());
$("site").addEventListener("input", schedule);
$("more").addEventListener("click", () => search({ append: true }));
$("results").addEventListener("click", (e) => {
  const btn = e.target.closest("button[data-action]");
  if (!btn) return;
  const li = btn.closest("li[data-run-id]");
  act(li, btn.dataset.action, btn).catch((err) => { btn.disabled = false; showError(err); });
});

const initial = new URLSearchParams(location.search).get("q");
if (initial) $("query").value = initial;
Promise.all([loadWorkflows(), loadStats(), search()]);
