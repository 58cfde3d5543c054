// The background: owns the native port, the context menus, the keyboard command, the badge
// and the notifications. Every listener is registered here at the top level (a stopped
// service worker is woken by the event it listens for) and waits on one `ready` promise.
// Extension pages talk to it with runtime messages {type, ...} routed by HANDLERS, and
// get live updates over a "popup" port.

import { api, broadcast, local, session } from "./lib/ext.js";
import { NativeHost } from "./lib/native.js";
import { DEFAULT_MAX_BYTES, captureFromMenu, capturePage, kindOf } from "./lib/capture.js";
import { parseMenuId, refreshMenus } from "./lib/menus.js";
import { age, runCost, usd } from "./lib/format.js";
import { PreparedPages } from "./lib/prepared.js";
import { RunStatus, isTerminalRun } from "./lib/states.js";
import { hostOf, rulesFor } from "./lib/sites.js";
import { batchHandlers, openLinksBatch } from "./lib/batches.js";

const FIRST_WORKFLOW = "page-digest";
const DEFAULT_SETTINGS = { defaultTemplate: "", notifications: true, maxCaptureBytes: DEFAULT_MAX_BYTES };
const RECENT_LIMIT = 20;

const state = {
  settings: { ...DEFAULT_SETTINGS },
  templates: [],
  templatesFolder: null,
  templateErrors: [],
  runs: new Map(), // id -> summary, newest first when listed
  runsLoadedAt: null,
  outboxCount: 0,
  prepared: new PreparedPages(), // tab id -> the page the popup estimated, reused by its Send
  captures: [], // recent capture outcomes, for the popup
  sites: [], // [[sites]] rules from the host's config, kept for when it is not reachable
};
const popups = new Set();

const host = new NativeHost({
  onEvent: handleEvent,
  onState: () => pushState(),
  onConnected: handleConnected,
  onDelivered: handleDelivered,
  onOutboxChanged: (n) => {
    state.outboxCount = n;
    updateBadge();
    pushState();
  },
});

// ---- start-up ----------------------------------------------------------------------------

async function init() {
  const stored = await local.getMany(["settings", "templates", "templatesFolder", "sites"]);
  state.sites = stored.sites || [];
  state.templatesFolder = stored.templatesFolder || null;
  state.settings = { ...DEFAULT_SETTINGS, ...(stored.settings || {}) };
  state.templates = stored.templates || [];
  state.outboxCount = await host.outbox.count(); // loads the outbox (and brings an older layout over)
  state.captures = (await session.get("captures")) || [];
  for (const run of (await session.get("runs")) || []) state.runs.set(run.id, run);
  await host.restore();
  await refreshMenus(state.templates, { hostReachable: true });
  host.connect();
  updateBadge();
}

const ready = init().catch((err) => console.error("init failed", err));

// ---- the host ----------------------------------------------------------------------------

async function handleConnected({ reconnected }) {
  await Promise.allSettled([
    host.send({ type: "runs.subscribe" }),
    loadTemplates(),
    loadRuns(),
    loadSites(),
  ]);
  if (reconnected) pushState();
}

async function loadTemplates() {
  const { templates, folder, errors } = await host.send({ type: "templates.list" });
  state.templates = templates || [];
  state.templatesFolder = folder || null;
  state.templateErrors = errors || [];
  await local.set({ templates: state.templates, templatesFolder: state.templatesFolder });
  await refreshMenus(state.templates);
  pushState();
  return state.templates;
}

async function loadSites() {
  const { sites } = await host.send({ type: "config" });
  if (!sites || sites.error) return state.sites; // a broken [[sites]]: keep the last good rules
  state.sites = sites.rules || [];
  await local.set({ sites: state.sites });
  return state.sites;
}

// A page on a `never` site is not read at all: refused before the capture, saying why.
function refuseNeverSite(...urls) {
  const url = urls.find((u) => u && rulesFor(u, state.sites).has("never"));
  if (url) {
    throw Object.assign(new Error(`${hostOf(url)} is a site you ruled "never" (Settings, Sites): its pages are `
                                  + "not captured or sent to any model."), { code: "site_never" });
  }
}

async function loadRuns(limit = RECENT_LIMIT) {
  const { runs } = await host.send({ type: "runs.list", limit, offset: 0 });
  const fresh = new Map();
  for (const run of runs || []) fresh.set(run.id, run);
  // Keep runs that events told us about and the list does not have yet.
  for (const [id, run] of state.runs) if (!fresh.has(id) && !isTerminalRun(run.status)) fresh.set(id, run);
  state.runs = fresh;
  state.runsLoadedAt = Date.now();
  await saveRuns();
  updateBadge();
  pushState();
  return recentRuns();
}

function handleEvent(msg) {
  if (msg.event === "run.updated") {
    const run = msg.run || msg.summary || msg;
    if (run && run.id) updateRun(run);
  } else if (msg.event === "templates.changed") {
    if (Array.isArray(msg.templates)) {
      state.templates = msg.templates;
      if (Array.isArray(msg.errors)) state.templateErrors = msg.errors;
      local.set({ templates: state.templates }).catch((err) => console.error("could not keep the templates", err));
      refreshMenus(state.templates).catch((err) => console.error("could not update the menus", err));
      pushState();
    } else {
      loadTemplates().catch(() => {});
    }
  }
}

function updateRun(run) {
  const before = state.runs.get(run.id);
  const merged = { ...(before || {}), ...run };
  delete merged.event;
  state.runs.set(run.id, merged);
  if (isTerminalRun(merged.status) && (!before || !isTerminalRun(before.status))) {
    notifyFinished(merged);
    checkActiveTabs().catch(() => {});
  }
  saveRuns();
  updateBadge();
  for (const port of popups) safePost(port, { type: "run.updated", run: merged });
}

function recentRuns() {
  return [...state.runs.values()]
    .sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")))
    .slice(0, RECENT_LIMIT);
}

let saveTimer = null;
function saveRuns() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => {
    session.set({ runs: recentRuns() }).catch((err) => console.error("could not keep the runs", err));
  }, 200);
}

// A capture from the outbox that nobody was waiting for any more (header: lib/outbox.js).
async function handleDelivered(header, result) {
  await recordCapture({ kind: header.kind, template: header.template, title: header.title,
                        run_id: result.run_id, delivered_late: true });
  loadRuns().catch(() => {});
}

async function recordCapture(entry) {
  state.captures = [{ at: Date.now(), ...entry }, ...state.captures].slice(0, 10);
  await session.set({ captures: state.captures });
  pushState();
}

// ---- badge and notifications --------------------------------------------------------------

function updateBadge() {
  const running = [...state.runs.values()].filter((r) => r.status === RunStatus.RUNNING).length;
  let text = running ? String(running) : "";
  let color = "#2563eb";
  let title = running ? `Hybrid Engine: ${running} run${running === 1 ? "" : "s"} running` : "Send page to workflow";
  if (host.status === "disconnected" && !running) {
    text = "!";
    color = "#b91c1c";
    title = `Hybrid Engine host not reachable: ${host.error || "unknown error"}`;
  }
  if (state.outboxCount) title += ` (${state.outboxCount} capture${state.outboxCount === 1 ? "" : "s"} waiting)`;
  api.action.setBadgeText({ text }).catch(() => {});
  api.action.setBadgeBackgroundColor({ color }).catch(() => {});
  api.action.setTitle({ title }).catch(() => {});
}

// "Already sent": a tab whose page already has a completed run shows a check mark, and the
// button's title says which workflow, when and at what cost. Per tab; cleared when the tab
// goes to a page without one.
const SENT_COLOR = "#15803d";

async function checkTab(tabId, url) {
  let done = [];
  if (/^https?:\/\//i.test(url || "") && host.status === "connected") {
    try {
      const { runs } = await host.send({ type: "runs.for_url", url }, { timeoutMs: 10000 });
      done = (runs || []).filter((r) => r.status === RunStatus.COMPLETED);
    } catch {
      return null; // the host is busy or gone: leave the tab as it is
    }
  }
  if (!done.length) {
    // null gives the tab the global badge back; a title has no such reset, so the global one is copied.
    await quietly(() => api.action.setBadgeText({ tabId, text: null }));
    await quietly(async () => api.action.setTitle({ tabId, title: await api.action.getTitle({}) }));
    return null;
  }
  const last = done[0];
  const cost = last.cost_state === "unknown" ? "cost unknown"
    : last.cost_state === "estimated" ? `~${usd(last.cost)} est.` : usd(last.cost);
  const more = done.length > 1 ? ` (${done.length} runs)` : "";
  const title = `Already sent: ${last.workflow}, ${age(last.finished_at)}, ${cost}${more}`;
  await quietly(() => api.action.setBadgeText({ tabId, text: "\u2713" }));
  await quietly(() => api.action.setBadgeBackgroundColor({ tabId, color: SENT_COLOR }));
  await quietly(() => api.action.setTitle({ tabId, title }));
  return title;
}

// A tab closed meanwhile makes these throw (some synchronously): the badge is not worth an error.
async function quietly(fn) {
  try {
    await fn();
  } catch {
    // nothing to show it on any more
  }
}

async function checkActiveTabs() {
  const tabs = await api.tabs.query({ active: true }).catch(() => []);
  await Promise.allSettled(tabs.map((t) => checkTab(t.id, t.url)));
}

function notifyFinished(run) {
  if (!state.settings.notifications || !api.notifications) return;
  const ok = run.status === RunStatus.COMPLETED;
  const title = `${run.name}: ${ok ? "done" : run.status.toLowerCase()}`;
  const message = ok
    ? `${run.total_tokens || 0} tokens, cost ${runCost(run).text}`
    : run.error || `${run.completed_steps || 0} of ${run.total_steps || 0} steps completed`;
  api.notifications.create(`run:${run.id}`, {
    type: "basic",
    iconUrl: api.runtime.getURL("icons/icon-128.png"),
    title,
    message,
  }).catch(() => {});
}

// ---- captures ------------------------------------------------------------------------------

function captureTemplates() {
  return state.templates.filter((t) => t.has_capture_slot !== false);
}

function defaultTemplate() {
  const names = captureTemplates().map((t) => t.name);
  if (state.settings.defaultTemplate && (names.includes(state.settings.defaultTemplate) || !names.length)) {
    return state.settings.defaultTemplate;
  }
  return automaticTemplate();
}

// A fresh install starts on the one-model digest, not the alphabetically first workflow
// (which may need keys for several providers). The options page names it for its "automatic".
function automaticTemplate() {
  const names = captureTemplates().map((t) => t.name);
  return names.includes(FIRST_WORKFLOW) ? FIRST_WORKFLOW : names[0] || null;
}

async function tabById(tabId) {
  if (tabId === undefined || tabId === null) {
    const [tab] = await api.tabs.query({ active: true, lastFocusedWindow: true });
    return tab;
  }
  return api.tabs.get(Number(tabId));
}

async function send(template, captured, extra = {}) {
  const { page, notice } = captured;
  refuseNeverSite(page.source_url); // the tab's address may have been unknown before the capture
  if (!template) {
    throw Object.assign(new Error("No workflow to send to: the host has not listed any templates yet."),
                        { code: "no_template" });
  }
  const started = performance.now();
  const outcome = await host.capture(template, page, { reuse: extra.reuse });
  const sendMs = performance.now() - started;
  const { reuse, ...recorded } = extra;
  await recordCapture({ kind: page.metadata?.kind || "page", template, title: page.title, notice,
                        run_id: outcome.result?.run_id || null, queued: !!outcome.queued,
                        discarded: !!outcome.discarded, reason: outcome.queued ? outcome.reason : null, ...recorded });
  if (outcome.delivered && outcome.result?.run_id) {
    // Show the run at once, before the host's first event arrives.
    const t = state.templates.find((x) => x.name === template);
    if (!state.runs.has(outcome.result.run_id)) {
      updateRun({ id: outcome.result.run_id, name: template, template, status: RunStatus.PENDING, progress: 0,
                  completed_steps: 1, total_steps: t?.steps || 0, total_tokens: 0, total_cost: 0,
                  unknown_cost_steps: 0, createdAt: new Date().toISOString(), updatedAt: new Date().toISOString() });
    }
  }
  return { ...outcome, notice, sendMs, bytes: page.content.length };
}

// The page of a tab, reusing what the popup captured for its estimate when it is fresh.
async function pageOfTab(tab, template, { reuse = true } = {}) {
  const prepared = reuse ? state.prepared.get(tab.id, tab.url) : null;
  if (prepared) return { ...prepared, ms: 0, reused: true };
  const captured = await capturePage(tab, { maxBytes: state.settings.maxCaptureBytes });
  state.prepared.put(tab.id, tab.url, captured);
  return captured;
}

// Context-menu clicks. A named function on the global scope so tests can call it with a
// made-up OnClickData (menus cannot be clicked in a headless browser).
async function onMenuClicked(info, tab) {
  await ready;
  const parsed = parseMenuId(info.menuItemId);
  if (!parsed || !parsed.template) return null;
  const kind = parsed.kind === "page" ? kindOf(info) : parsed.kind;
  try {
    refuseNeverSite(info.pageUrl || tab?.url, info.frameUrl, kind === "link" ? info.linkUrl : null,
                    kind === "image" ? info.srcUrl : null);
    if (kind === "links") return await openLinksBatch(parsed.template, info, tab);
    const captured = await captureFromMenu(kind, info, tab, { maxBytes: state.settings.maxCaptureBytes });
    return await send(parsed.template, captured, { via: "menu" });
  } catch (err) {
    await recordCapture({ kind, template: parsed.template, error: err.message });
    notifyError(`Could not send the ${kind}`, err.message);
    return { error: err.message };
  }
}

async function onCommand(command, tab) {
  await ready;
  if (command !== "send-page") return null;
  const target = tab || (await tabById());
  try {
    refuseNeverSite(target?.url || target?.pendingUrl);
    const captured = await capturePage(target, { maxBytes: state.settings.maxCaptureBytes });
    const outcome = await send(defaultTemplate(), captured, { via: "shortcut" });
    if (outcome.queued) notifyError("Capture kept for later", `The host is not reachable (${outcome.reason}).`);
    return outcome;
  } catch (err) {
    notifyError("Could not send the page", err.message);
    return { error: err.message };
  }
}

function notifyError(title, message) {
  if (!state.settings.notifications || !api.notifications) return;
  api.notifications.create(`error:${Date.now()}`, {
    type: "basic", iconUrl: api.runtime.getURL("icons/icon-128.png"), title, message: String(message),
  }).catch(() => {});
}

// ---- messages from the popup and the options page -------------------------------------------

function snapshot() {
  return {
    connection: host.snapshot(),
    templates: state.templates,
    templatesFolder: state.templatesFolder,
    templateErrors: state.templateErrors,
    defaultTemplate: defaultTemplate(),
    automaticTemplate: automaticTemplate(),
    settings: state.settings,
    runs: recentRuns(),
    runsLoadedAt: state.runsLoadedAt,
    outboxCount: state.outboxCount,
    captures: state.captures,
  };
}

function pushState() {
  if (!popups.size) return;
  const message = { type: "state", state: snapshot() };
  for (const port of popups) safePost(port, message);
}

function safePost(port, message) {
  try {
    port.postMessage(message);
  } catch {
    popups.delete(port);
  }
}

function hostCall(type, pick = []) {
  return (msg) => {
    const fields = {};
    for (const k of pick) if (msg[k] !== undefined) fields[k] = msg[k];
    return host.request(type, fields, { timeoutMs: 60000 });
  };
}

const HANDLERS = {
  state: () => snapshot(),
  connect: () => {
    host.connectNow();
    return host.snapshot();
  },
  "runs.list": async () => {
    await host.whenConnected();
    return { runs: await loadRuns() };
  },
  "runs.get": hostCall("runs.get", ["run_id"]),
  "runs.output": hostCall("runs.output", ["run_id", "step_id"]),
  "runs.retry": hostCall("runs.retry", ["run_id", "budget_usd"]),
  "runs.cancel": hostCall("runs.cancel", ["run_id"]),
  "runs.for_url": hostCall("runs.for_url", ["url"]),
  spend: hostCall("spend"),
  "library.search": hostCall("library.search", ["query", "workflow", "site", "status", "since", "until", "limit",
                                                "offset"]),
  "library.stats": hostCall("library.stats"),
  "runs.for_url": hostCall("runs.for_url", ["url"]),
  "runs.rerun": hostCall("runs.rerun", ["run_id"]),
  "runs.delete": async ({ run_id }) => {
    const result = await host.request("runs.delete", { run_id }, { timeoutMs: 60000 });
    state.runs.delete(result.run_id);
    saveRuns();
    updateBadge();
    pushState();
    checkActiveTabs().catch(() => {});
    return result;
  },
  "library.open": async ({ query } = {}) => {
    const q = query ? `?q=${encodeURIComponent(query)}` : "";
    return api.tabs.create({ url: api.runtime.getURL(`library/library.html${q}`) });
  },
  "templates.list": async () => {
    await host.whenConnected();
    return { templates: await loadTemplates() };
  },
  doctor: hostCall("doctor"),
  "host.status": hostCall("host.status"),
  config: hostCall("config"),
  // The options page's: a key passes through to the host and is kept nowhere here.
  "keys.status": hostCall("keys.status"),
  "keys.set": hostCall("keys.set", ["provider", "key"]),
  "keys.remove": hostCall("keys.remove", ["provider"]),
  "settings.update": hostCall("settings.update", ["section", "key", "value"]),
  "spend.daily": hostCall("spend.daily", ["days"]),
  hello: async () => {
    await host.whenConnected();
    return host.hello;
  },
  estimate: async ({ tabId, template }) => {
    const started = performance.now();
    const tab = await tabById(tabId);
    return early.take(tab, template) || estimateTab(tab, template, started);
  },
  // Sent by popup/early.js before the popup's modules have loaded: the workflow it will offer
  // first is estimated at once, and the popup's own `estimate` joins it.
  "estimate.early": async ({ tabId }) => {
    const started = performance.now();
    const tab = await tabById(tabId);
    const template = firstWorkflow();
    if (!tab || !template || host.status !== "connected" || String(tab.url || "").startsWith(api.runtime.getURL(""))) {
      return { started: false };
    }
    early.put(tab, template, estimateTab(tab, template, started));
    return { started: true, template };
  },
  "capture.page": async ({ tabId, template, reuse }) => {
    const started = performance.now();
    const tab = await tabById(tabId);
    refuseNeverSite(tab?.url || tab?.pendingUrl);
    const captured = await pageOfTab(tab, template);
    const outcome = await send(template || defaultTemplate(), captured,
                               { via: "popup", reuse: ["reuse", "fresh"].includes(reuse) ? reuse : undefined });
    return { ...outcome, captureMs: captured.ms, totalMs: performance.now() - started, reused: !!captured.reused };
  },
  "sites.set": async ({ sites }) => {
    const reply = await host.request("sites.set", { sites }, { timeoutMs: 30000 });
    state.sites = reply.sites || [];
    await local.set({ sites: state.sites });
    return reply;
  },
  "settings.set": async ({ settings }) => {
    state.settings = { ...state.settings, ...settings };
    await local.set({ settings: state.settings });
    pushState();
    return state.settings;
  },
  ...batchHandlers({ host, getState: () => state, tabById, onStarted: () => loadRuns().catch(() => {}) }),
  // Headers only (lib/outbox.js): the pages stay in storage.
  outbox: async () => ({ items: await host.outbox.list() }),
  "outbox.discard": ({ id }) => host.discard(String(id)),
  "outbox.retry": ({ id }) => host.retry(String(id)),
  "outbox.flush": async () => {
    host.connectNow();
    return { delivered: await host.flushOutbox() };
  },
};

async function estimateTab(tab, template, started) {
  refuseNeverSite(tab?.url || tab?.pendingUrl);
  const captured = await pageOfTab(tab, template, { reuse: false });
  const { page } = captured;
  const asked = performance.now();
  const estimate = await host.request("estimate", { template, page: stripMetadata(page) }, { timeoutMs: 30000 });
  // Where an estimate's time goes (the popup marks it; bench/popup_estimate.py prints it).
  const timing = { captureMs: captured.ms, readMs: captured.readMs, hostMs: performance.now() - asked,
                   totalMs: performance.now() - started };
  // Without the optional `tabs` permission a page load does not show the tab's address, so the
  // "already sent" mark is set here, where the popup's click (activeTab) has shown it.
  checkTab(tab.id, tab.url || page.source_url).catch(() => {});
  return { estimate, notice: captured.notice, timing,
           page: { title: page.title, url: page.source_url, bytes: page.content.length, type: page.content_type,
                   favicon: tab.favIconUrl || null } };
}

// The workflow the popup offers first (popup.js renderTemplates): the one used last, else the default.
function firstWorkflow() {
  const names = captureTemplates().map((t) => t.name);
  return [state.settings.lastWorkflow, defaultTemplate(), FIRST_WORKFLOW].find((n) => n && names.includes(n))
    || names[0] || null;
}

// One estimate started early, for one popup: taken by the first `estimate` for the same tab,
// address and workflow within a few seconds, then forgotten (a later ask reads the page anew).
const early = {
  entry: null,
  put(tab, template, promise) {
    promise.catch(() => {}); // nobody may take it: its failure is the taker's to see
    this.entry = { key: `${tab.id}|${tab.url}|${template}`, promise, at: performance.now() };
  },
  take(tab, template) {
    const e = this.entry;
    if (!e || !tab || e.key !== `${tab.id}|${tab.url}|${template}` || performance.now() - e.at > 10000) return null;
    this.entry = null;
    return e.promise;
  },
};

function stripMetadata(page) {
  const { metadata, ...rest } = page;
  return rest;
}

async function handleMessage(msg) {
  await ready;
  const handler = HANDLERS[msg?.type];
  if (!handler) return { ok: false, error: { code: "unknown_type", message: `no handler for ${msg?.type}` } };
  try {
    return { ok: true, result: await handler(msg) };
  } catch (err) {
    return { ok: false, error: { code: err.code || "internal", message: err.message || String(err) } };
  }
}

// ---- listeners (top level) -------------------------------------------------------------------

api.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (sender.id !== api.runtime.id) return false;
  handleMessage(msg).then(sendResponse);
  return true;
});

api.runtime.onConnect.addListener((port) => {
  if (port.name !== "popup" || port.sender?.id !== api.runtime.id) return;
  popups.add(port);
  port.onDisconnect.addListener(() => popups.delete(port));
  ready.then(() => {
    if (host.status !== "connected") host.connectNow(); // someone is looking: try at once
    safePost(port, { type: "state", state: snapshot() });
  });
});

api.tabs.onUpdated.addListener((tabId, change, tab) => {
  if (change.status !== "complete") return;
  ready.then(() => checkTab(tabId, tab.url)).catch((err) => console.error("could not check the tab", err));
});

api.contextMenus.onClicked.addListener((info, tab) => {
  onMenuClicked(info, tab).catch((err) => console.error("menu capture failed", err));
});

api.commands.onCommand.addListener((command, tab) => {
  onCommand(command, tab).catch((err) => console.error("shortcut capture failed", err));
});

api.runtime.onInstalled.addListener(() => {
  ready.then(() => refreshMenus(state.templates, { hostReachable: host.status === "connected" }))
    .catch((err) => console.error("could not build the menus", err));
});

api.runtime.onStartup.addListener(() => {
  ready.then(() => host.connectNow());
});

if (api.notifications?.onClicked) {
  api.notifications.onClicked.addListener((id) => {
    if (id.startsWith("run:")) {
      api.tabs.create({ url: api.runtime.getURL(`popup/popup.html#run=${encodeURIComponent(id.slice(4))}`) });
    }
  });
}

// For tests and debugging from the worker's console.
Object.assign(globalThis, { onMenuClicked, onCommand, hybrid: { host, state, ready, handleMessage, HANDLERS, send, checkTab, capturePage, early } });
