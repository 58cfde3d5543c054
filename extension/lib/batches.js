// Batches from the background's side: many pages as one thing (docs/PROTOCOL.md, "Batches").
// Tabs are read here, each as a single send reads its tab (lib/capture.js: hidden text left
// out, the Readability article, PDFs), then estimated together with one `batch.estimate`;
// the pages wait here until the person confirms, then go as one `batch.start`. Links of a
// selection and bookmark folders are addresses: the host fetches them into a paused batch,
// which the person's confirmation resumes. The popup renders and sends intents only.

import { api, session } from "./ext.js";
import { capturePage } from "./capture.js";
import { bookmarkFolders, bookmarkLinks, linksInSelection, tabSources, tabsOf } from "./batchsources.js";
import { rulesFor } from "./sites.js";

const CAPTURES_AT_ONCE = 3;
const MAX_PAGES_PER_MESSAGE = 1000; // the host's limit per batch message
const MAX_BYTES_PER_MESSAGE = 24 * 1024 * 1024; // well under the host's 64 MiB frame, JSON escapes included
const MAX_URLS = 500;
const KEEP_MS = 10 * 60 * 1000; // captured pages wait this long for the person's yes
const HOST_TIMEOUT_MS = 120000; // the host fetches addresses inside its reply: many take a while

const LOAD_WAIT_MS = 30000;
const TAB_SOURCES = ["highlighted", "window", "group"];

// Pages of many tabs: an estimate and its pages are kept together until sent or dropped.
const prepared = new Map(); // id -> {template, pages, at}

function forget(id) {
  prepared.delete(id);
}

let sweepTimer = null;

// Pages nobody said yes to are not held longer than KEEP_MS (a popup closed on its estimate).
function sweep() {
  for (const [id, p] of prepared) if (Date.now() - p.at > KEEP_MS) prepared.delete(id);
  clearTimeout(sweepTimer);
  sweepTimer = prepared.size ? setTimeout(sweep, KEEP_MS + 1000) : null;
}

function pageBytes(page) {
  return (page.content?.length || 0) + (page.article?.length || 0) + 1024;
}

// Pages in messages the host takes: at most MAX_PAGES_PER_MESSAGE and about MAX_BYTES each.
function chunks(pages) {
  const out = [];
  let cur = [], size = 0;
  for (const p of pages) {
    const b = pageBytes(p);
    if (cur.length && (cur.length >= MAX_PAGES_PER_MESSAGE || size + b > MAX_BYTES_PER_MESSAGE)) {
      out.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(p);
    size += b;
  }
  if (cur.length) out.push(cur);
  return out;
}

// One estimate for pages sent in several messages: the sums, and each budget judged again
// on the whole.
function combine(parts) {
  if (parts.length === 1) return parts[0];
  const sum = (k) => parts.reduce((n, p) => n + Number(p[k] || 0), 0);
  const total = { pages: sum("pages"), prompt_tokens: sum("prompt_tokens"), cost_min: sum("cost_min"),
                  cost_max: sum("cost_max"), price_unknown_pages: sum("price_unknown_pages"),
                  lower_bound: parts.some((p) => p.lower_bound),
                  largest_run_cost_max: Math.max(...parts.map((p) => Number(p.largest_run_cost_max || 0))),
                  template: parts[0].template };
  total.budgets = (parts[0].budgets || []).map((b) => ({
    ...b, fits: b.kind === "run" ? total.largest_run_cost_max <= b.limit_usd : total.cost_max <= b.left_usd,
  }));
  return total;
}

// A tab opened for a page: done loading (or given up on after LOAD_WAIT_MS: what it shows is read).
function loaded(tabId) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      api.tabs.onUpdated.removeListener(listener);
      resolve();
    };
    const listener = (id, change) => {
      if (id === tabId && change.status === "complete") done();
    };
    const timer = setTimeout(done, LOAD_WAIT_MS);
    api.tabs.onUpdated.addListener(listener);
    api.tabs.get(tabId).then((t) => { if (t.status === "complete") done(); }, done);
  });
}

export function batchHandlers({ host, getState, tabById, onStarted }) {
  const req = (type, fields, timeoutMs = 60000) => host.request(type, fields, { timeoutMs });
  const sites = () => getState().sites;
  const never = (url) => !!url && rulesFor(url, sites()).has("never");

  function supported() {
    const types = host.hello?.capabilities?.types;
    return !Array.isArray(types) || types.includes("batch.start");
  }

  // Each tab read as a single send reads it, a few at a time. A tab on a `never` site, or
  // one the browser has unloaded, is left out and said so.
  async function captureTabs(tabs) {
    const pages = new Array(tabs.length);
    const skipped = [];
    const items = new Array(tabs.length);
    let next = 0;
    const maxBytes = getState().settings.maxCaptureBytes;
    async function worker() {
      while (next < tabs.length) {
        const i = next++;
        const tab = tabs[i];
        const label = { title: tab.title || tab.url, url: tab.url };
        if (never(tab.url)) {
          skipped.push({ ...label, reason: "a site you ruled \"never\"" });
          continue;
        }
        if (tab.discarded || tab.status === "unloaded") {
          skipped.push({ ...label, reason: "the browser unloaded this tab: open it once to include it" });
          continue;
        }
        try {
          const { page, notice } = await capturePage(tab, { maxBytes });
          if (never(page.source_url)) {
            skipped.push({ ...label, reason: "a site you ruled \"never\"" });
            continue;
          }
          pages[i] = page;
          items[i] = { title: page.title || tab.title || page.source_url, url: page.source_url, notice,
                       bytes: page.content.length };
        } catch (err) {
          skipped.push({ ...label, reason: err.message || String(err) });
        }
      }
    }
    await Promise.all(Array.from({ length: CAPTURES_AT_ONCE }, worker));
    return { pages: pages.filter(Boolean), items: items.filter(Boolean), skipped };
  }

  async function estimatePages(template, pages, budget) {
    const fields = budget ? { budget_usd: budget } : {};
    const parts = [];
    for (const part of chunks(pages)) {
      parts.push(await req("batch.estimate", { template, pages: part, ...fields }, HOST_TIMEOUT_MS));
    }
    return combine(parts);
  }

  async function prepareTabs({ tabId, source, template, budget_usd }) {
    const refTab = await tabById(tabId);
    const tabs = await tabsOf(source, refTab);
    const { pages, items, skipped } = await captureTabs(tabs);
    if (!pages.length) {
      throw Object.assign(new Error(skipped.length ? `No page could be read: ${skipped[0].reason}.`
        : "No web page among these tabs."), { code: "nothing_to_send" });
    }
    const estimate = await estimatePages(template, pages, budget_usd);
    const id = crypto.randomUUID();
    const name = { highlighted: "selected tabs", window: "tabs of a window", group: "a tab group" }[source];
    prepared.set(id, { template, pages, at: Date.now(), name: `${template}: ${pages.length} ${name}` });
    sweep();
    return { prepared_id: id, kind: "pages", estimate, items, skipped };
  }

  // Addresses: fetched by the host into a batch that waits (paused) for the person's yes.
  async function prepareUrls({ links, template, budget_usd, name }) {
    const usable = links.filter((l) => !never(l.url)).slice(0, MAX_URLS);
    const skipped = links.filter((l) => never(l.url)).map((l) => ({ title: l.text || l.url, url: l.url,
                                                                        reason: "a site you ruled \"never\"" }));
    if (!usable.length) throw Object.assign(new Error("No link to send."), { code: "nothing_to_send" });
    const batch = await req("batch.start", { template, urls: usable.map((l) => l.url), paused: true, name,
                                             ...(budget_usd ? { budget_usd } : {}) }, HOST_TIMEOUT_MS);
    let estimate = null, estimateError = null;
    try {
      estimate = await req("batch.estimate", { batch_id: batch.id }, HOST_TIMEOUT_MS); // judged against its budget
    } catch (err) {
      estimateError = err.message;
    }
    const id = crypto.randomUUID();
    prepared.set(id, { template, batchId: batch.id, at: Date.now() });
    sweep();
    const items = (batch.items || []).map((it) => ({ title: it.title || it.source, url: it.source, state: it.state,
                                                     notice: it.note || null }));
    return { prepared_id: id, kind: "urls", batch_id: batch.id, estimate, estimate_error: estimateError, items,
             skipped };
  }

  async function pendingLinks() {
    const got = await session.get("batchLinks");
    return got && Date.now() - got.at < KEEP_MS ? got : null;
  }

  async function send({ prepared_id, budget_usd }) {
    const p = prepared.get(prepared_id);
    if (!p) {
      throw Object.assign(new Error("These pages were read too long ago: choose them again."), { code: "expired" });
    }
    forget(prepared_id);
    const budget = budget_usd ? { budget_usd } : {};
    let batch;
    if (p.batchId) {
      batch = await req("batch.resume", { batch_id: p.batchId, ...budget });
    } else {
      const [first, ...rest] = chunks(p.pages);
      batch = await req("batch.start", { template: p.template, pages: first, name: p.name, paused: rest.length > 0,
                                         ...budget }, HOST_TIMEOUT_MS);
      for (const part of rest) await req("batch.add", { batch_id: batch.id, pages: part }, HOST_TIMEOUT_MS);
      if (rest.length) batch = await req("batch.resume", { batch_id: batch.id, ...budget });
    }
    onStarted?.(batch);
    return batch;
  }

  async function discard({ prepared_id }) {
    const p = prepared.get(prepared_id);
    forget(prepared_id);
    if (p?.batchId) await req("batch.cancel", { batch_id: p.batchId }).catch(() => null);
    return { discarded: !!p };
  }

  // Pages the host could not fetch because they sit behind a login: read here, with the
  // person's session, each in a background tab opened for it and closed after.
  async function takeOver({ batch_id }) {
    const before = await req("batch.get", { batch_id });
    const maxBytes = getState().settings.maxCaptureBytes;
    const failed = [];
    let filled = 0;
    for (const it of (before.items || []).filter((i) => i.state === "needs_browser")) {
      if (!/^https?:/i.test(it.source || "") || never(it.source)) {
        failed.push({ pos: it.pos, reason: "not a page the extension may read" });
        continue;
      }
      const tab = await api.tabs.create({ url: it.source, active: false });
      try {
        await loaded(tab.id);
        const { page } = await capturePage(await api.tabs.get(tab.id), { maxBytes });
        if (never(page.source_url)) throw new Error("it went to a site you ruled \"never\"");
        await req("batch.fill", { batch_id, pos: it.pos, page }, HOST_TIMEOUT_MS);
        filled++;
      } catch (err) {
        failed.push({ pos: it.pos, reason: err.message || String(err) });
      } finally {
        api.tabs.remove(tab.id).catch(() => {});
      }
    }
    return { ...(await req("batch.get", { batch_id })), filled, failed };
  }

  const pass = (type, keys) => (msg) => {
    const fields = {};
    for (const k of keys) if (msg[k] !== undefined) fields[k] = msg[k];
    return req(type, fields);
  };

  return {
    "batch.sources": async ({ tabId }) => {
      const refTab = await tabById(tabId);
      const tabs = refTab ? await tabSources(refTab) : {};
      return { supported: supported(), ...tabs, links: await pendingLinks(),
               bookmarks_granted: !!api.bookmarks };
    },
    "batch.prepare": async (msg) => {
      if (!msg.template) throw Object.assign(new Error("Choose a workflow first."), { code: "no_template" });
      if (TAB_SOURCES.includes(msg.source)) return prepareTabs(msg);
      if (msg.source === "links") {
        const got = await pendingLinks();
        if (!got) throw Object.assign(new Error("The links were chosen too long ago: choose them again."), { code: "expired" });
        await session.set({ batchLinks: null });
        return prepareUrls({ ...msg, links: got.links, name: `${msg.template}: ${got.links.length} links` });
      }
      if (msg.source === "bookmarks") {
        const links = await bookmarkLinks(msg.folderId);
        return prepareUrls({ ...msg, links, name: `${msg.template}: a bookmark folder` });
      }
      throw Object.assign(new Error(`unknown source: ${msg.source}`), { code: "bad_request" });
    },
    "batch.send": send,
    "batch.take_over": takeOver,
    "batch.discard": discard,
    "bookmarks.folders": async () => ({ folders: await bookmarkFolders() }),
    "batch.list": pass("batch.list", ["limit"]),
    "batch.get": pass("batch.get", ["batch_id", "limit", "offset"]),
    "batch.pause": pass("batch.pause", ["batch_id"]),
    "batch.resume": pass("batch.resume", ["batch_id", "budget_usd"]),
    "batch.cancel": pass("batch.cancel", ["batch_id"]),
    "batch.retry_failed": pass("batch.retry_failed", ["batch_id", "budget_usd"]),
  };
}

// The context menu's "Send links in selection": the links are read from the page the person
// clicked in (activeTab grants it) and kept for a while, and the popup opens on them as a tab,
// so that the combined estimate is seen before anything is sent.
export async function openLinksBatch(template, info, tab) {
  const target = { tabId: tab.id };
  if (Number.isInteger(info.frameId) && info.frameId > 0) target.frameIds = [info.frameId];
  const [first] = await api.scripting.executeScript({ target, func: linksInSelection, injectImmediately: true });
  const links = first?.result || [];
  if (!links.length) throw new Error("the selection has no web links in it");
  await session.set({ batchLinks: { links, from: info.pageUrl || tab.url || null, at: Date.now() } });
  const q = new URLSearchParams({ tab: String(tab.id), source: "links", template });
  await api.tabs.create({ url: api.runtime.getURL(`popup/popup.html?${q}`) });
  return { links: links.length };
}
