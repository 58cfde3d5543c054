// "Send several pages": the highlighted tabs, all tabs of the window, the tab group, links of
// a selection (from the context menu) or a bookmark folder. The background reads the pages
// and asks one combined estimate; it is shown first, and one yes sends them as one batch.
// Access is asked for inside the click, for the sites of these tabs only (or for bookmarks),
// never at install. Page titles are untrusted: text nodes only.

import { api } from "../lib/ext.js";
import { bytes, usd, usdBudget } from "../lib/format.js";
import { $, call, mark } from "./common.js";

const LABELS = {
  highlighted: (n) => `The ${n} highlighted tabs`,
  group: (n) => `The ${n} tab${n === 1 ? "" : "s"} of this tab group`,
  window: (n) => `All ${n} tab${n === 1 ? "" : "s"} of this window`,
  links: (n) => `${n} link${n === 1 ? "" : "s"} from the selection`,
};
const BUTTON = {
  highlighted: (n) => `Send ${n} tabs`, group: (n) => `Send ${n} tabs`, window: (n) => `Send ${n} tabs`,
  links: (n) => `Send ${n} links`, bookmarks: (n) => (n ? `Send ${n} bookmarks` : "Send the folder"),
};

const batch = { sources: {}, tabId: null, prepared: null, folders: [], onSent: null, busy: false };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setStatus(kind, text) {
  const s = $("batch-status");
  s.dataset.kind = kind;
  s.textContent = text;
}

function chosen() {
  const key = $("batch-source").value;
  if (key === "bookmarks") {
    const folder = batch.folders.find((f) => f.id === $("batch-folder").value);
    return { key, count: folder ? folder.count : 0, granted: true, origins: [] };
  }
  const s = batch.sources[key] || {};
  return { key, count: s.count ?? s.links?.length ?? 0, granted: s.granted !== false, origins: s.origins || [],
           permissions: s.permissions };
}

function budget() {
  const v = Number($("batch-budget-input").value);
  return Number.isFinite(v) && v > 0 ? v : null;
}

// Also called when the workflow list changes: no workflow, no sending.
export function renderButton() {
  const c = chosen();
  const b = $("batch-button");
  b.textContent = (BUTTON[c.key] || BUTTON.window)(c.count);
  b.disabled = batch.busy || !$("workflow").value || (c.key === "bookmarks" ? !$("batch-folder").value : !c.count);
  const bookmarks = c.key === "bookmarks";
  $("batch-folder").hidden = !bookmarks || !batch.folders.length;
  $("batch-folder-allow").hidden = !bookmarks || !!batch.folders.length;
}

// The sources of the tab the popup is on; `preferred` (the context menu's links) is chosen first.
export async function refreshBatchSources(tabId, connected, preferred = null) {
  batch.tabId = tabId;
  if (!connected) return;
  let got;
  try {
    got = await call("batch.sources", { tabId });
  } catch {
    return; // no card: the page alone can still be sent
  }
  if (!got.supported) return;
  batch.sources = {};
  for (const k of ["highlighted", "group", "window"]) if (got[k]?.count) batch.sources[k] = got[k];
  if (got.links?.links?.length) batch.sources.links = { count: got.links.links.length, granted: true };
  const select = $("batch-source");
  const before = select.value;
  select.textContent = "";
  for (const [k, s] of Object.entries(batch.sources)) select.append(new Option(LABELS[k](s.count), k));
  select.append(new Option("A bookmark folder…", "bookmarks"));
  const order = [preferred, before, "highlighted", "group", "window"];
  select.value = order.find((k) => k && (batch.sources[k] || k === "bookmarks")) || "bookmarks";
  batch.bookmarksGranted = !!got.bookmarks_granted;
  $("batch").hidden = false;
  if (select.value === "bookmarks" && batch.bookmarksGranted) await loadFolders();
  renderButton();
}

async function loadFolders() {
  try {
    ({ folders: batch.folders } = await call("bookmarks.folders"));
  } catch (err) {
    setStatus("error", `Bookmarks unavailable: ${err.message}`);
    return;
  }
  const select = $("batch-folder");
  select.textContent = "";
  for (const f of batch.folders) select.append(new Option(`${f.path} (${f.count})`, f.id));
  if (!batch.folders.length) setStatus("", "No bookmark folder has web addresses in it.");
  renderButton();
}

// ---- the estimate, then the yes -----------------------------------------------------------

function costLine(e) {
  if (e.price_unknown_pages >= e.pages) return "cost unknown";
  const lo = usd(e.cost_min), hi = usd(e.cost_max);
  const range = lo === hi ? lo : `${lo} – ${hi}`;
  return `${range}${e.price_unknown_pages ? ` + unknown for ${e.price_unknown_pages} page${e.price_unknown_pages === 1 ? "" : "s"}` : ""}`;
}

const BUDGET_NAMES = { run: "Run budget (each page)", batch: "Batch budget", daily: "Daily budget", monthly: "Monthly budget" };

function renderEstimate(r) {
  const e = r.estimate;
  const list = $("batch-budgets");
  list.textContent = "";
  if (!e) {
    $("batch-estimate-cost").textContent = `No estimate: ${r.estimate_error || "the host did not give one"}`;
    $("batch-estimate-detail").textContent = "";
  } else {
    $("batch-estimate-cost").textContent = `Estimate for ${e.pages} page${e.pages === 1 ? "" : "s"}: ${costLine(e)}`;
    $("batch-estimate-detail").textContent =
      `${e.lower_bound ? "at least " : ""}${Number(e.prompt_tokens || 0).toLocaleString("en-US")} prompt tokens`;
    for (const b of e.budgets || []) {
      const li = el("li");
      li.dataset.ok = String(!!b.fits);
      li.dataset.kind = b.kind;
      li.append(el("span", "check", `${b.fits ? "✓" : "✕"} ${BUDGET_NAMES[b.kind] || b.kind} ${usdBudget(b.limit_usd)}`));
      const left = b.kind === "daily" || b.kind === "monthly" ? `, ${usd(b.left_usd)} left` : "";
      li.append(el("span", "said", `${b.fits ? "fits" : "does not fit"}${left}`));
      list.append(li);
    }
  }
  const pages = $("batch-page-list");
  pages.textContent = "";
  for (const it of r.items || []) {
    const li = el("li", "", it.title || it.url || "");
    li.title = it.url || "";
    const extra = [it.state && it.state !== "waiting" ? it.state.replace("_", " ") : "", it.bytes ? bytes(it.bytes) : "",
                   it.notice || ""].filter(Boolean).join(" · ");
    if (extra) li.append(el("span", "muted", ` (${extra})`));
    pages.append(li);
  }
  for (const it of r.skipped || []) {
    const li = el("li", "skipped", `Left out: ${it.title || it.url || ""}`);
    li.append(el("span", "", ` (${it.reason})`));
    pages.append(li);
  }
  const n = (r.items || []).length;
  $("batch-pages-summary").textContent = `${n} page${n === 1 ? "" : "s"}`
    + (r.skipped?.length ? `, ${r.skipped.length} left out` : "");
  $("batch-confirm").textContent = r.kind === "urls" ? "Start the batch" : `Send ${n} page${n === 1 ? "" : "s"} as one batch`;
  const over = (e?.budgets || []).some((b) => !b.fits);
  $("batch-confirm").dataset.warn = String(over);
  $("batch-review").hidden = false;
}

async function prepare(source) {
  if (batch.prepared) await discard(); // asked again: the pages read before are not kept twice
  batch.busy = true;
  renderButton();
  setStatus("", source === "bookmarks" || source === "links" ? "The host is fetching the pages…" : "Reading the tabs…");
  mark("batch-clicked");
  try {
    const r = await call("batch.prepare", { tabId: batch.tabId, source, template: $("workflow").value,
                                            folderId: $("batch-folder").value || undefined,
                                            ...(budget() ? { budget_usd: budget() } : {}) });
    batch.prepared = r;
    renderEstimate(r);
    setStatus("", "");
    mark("batch-estimate-shown", { pages: r.estimate?.pages ?? null });
  } catch (err) {
    setStatus("error", `Not sent: ${err.message}`);
  } finally {
    batch.busy = false;
    renderButton();
  }
}

// Synchronous up to the permission request: Firefox grants one only inside the click itself.
function onSendClick() {
  const c = chosen();
  let asked = Promise.resolve(true);
  if (!c.granted && c.origins.length) {
    asked = api.permissions.request({ origins: c.origins, ...(c.permissions ? { permissions: c.permissions } : {}) });
  }
  asked.then((ok) => {
    if (!ok) {
      setStatus("error", "Not sent: reading these tabs needs access to their sites, which was not given.");
      return;
    }
    if (batch.sources[c.key]) batch.sources[c.key].granted = true;
    prepare(c.key);
  }, (err) => setStatus("error", `Not sent: ${err.message}`));
}

async function confirm() {
  const p = batch.prepared;
  if (!p) return;
  $("batch-confirm").disabled = true;
  try {
    const b = await call("batch.send", { prepared_id: p.prepared_id, ...(budget() ? { budget_usd: budget() } : {}) });
    batch.prepared = null;
    $("batch-review").hidden = true;
    const n = Number(b.counts?.total || 0);
    setStatus("ok", n ? `Batch started: ${n} page${n === 1 ? "" : "s"}.` : "Batch started.");
    mark("batch-sent");
    batch.onSent?.(b);
  } catch (err) {
    setStatus("error", `Not sent: ${err.message}`);
  } finally {
    $("batch-confirm").disabled = false;
  }
}

async function discard() {
  const p = batch.prepared;
  batch.prepared = null;
  $("batch-review").hidden = true;
  setStatus("", "");
  if (p) await call("batch.discard", { prepared_id: p.prepared_id }).catch(() => {});
}

export function wireBatchSend({ onSent }) {
  batch.onSent = onSent;
  $("batch-button").addEventListener("click", onSendClick);
  $("batch-confirm").addEventListener("click", confirm);
  $("batch-discard").addEventListener("click", discard);
  $("batch-source").addEventListener("change", () => {
    if ($("batch-source").value === "bookmarks" && batch.bookmarksGranted && !batch.folders.length) loadFolders();
    if (batch.prepared) discard();
    renderButton();
  });
  $("batch-folder").addEventListener("change", renderButton);
  $("workflow").addEventListener("change", () => {
    if (batch.prepared) discard();
    renderButton();
  });
  $("batch-folder-allow").addEventListener("click", () => {
    api.permissions.request({ permissions: ["bookmarks"] }).then((ok) => {
      if (!ok) {
        setStatus("error", "Bookmarks were not allowed: choose another source.");
        return;
      }
      batch.bookmarksGranted = true;
      loadFolders();
    }, (err) => setStatus("error", err.message));
  });
}
