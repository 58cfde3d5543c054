// Where the pages of a batch come from: the highlighted tabs of a window (when more than
// one is), all its tabs, the tab group of the tab the popup was opened on, the links of a
// selection, or a bookmark folder. Tabs are read by the extension (lib/capture.js, as a
// single send reads one); links and bookmarks are addresses the host fetches itself.

import { api } from "./ext.js";

// Pages a batch can be made of: the extension's own and the browser's are left out.
function sendable(tab) {
  return /^(https?|file):/i.test(tab.url || tab.pendingUrl || "");
}

// The pattern an optional host permission is asked for: one per site, any port and path.
function originPattern(url) {
  try {
    const u = new URL(url);
    return ["http:", "https:"].includes(u.protocol) ? `${u.protocol}//${u.hostname}/*` : null;
  } catch {
    return null;
  }
}

async function grantedFor(origins) {
  if (!origins.length) return true;
  try {
    return await api.permissions.contains({ origins });
  } catch {
    return false; // a pattern the manifest does not list as optional: asking will say so
  }
}

// Without the optional `tabs` permission a tab's address is hidden unless its site was granted:
// such tabs are counted as sendable, and the click asks for `tabs` and every site together (one
// prompt: which sites they are on cannot be known before). Reading them then leaves out the ones
// that cannot be sent, and says so.
const EVERY_SITE = ["http://*/*", "https://*/*"];

async function describe(tabs) {
  const hidden = tabs.filter((t) => !t.url && !t.pendingUrl);
  if (hidden.length) {
    const known = tabs.filter((t) => t.url || t.pendingUrl);
    const count = hidden.length + known.filter(sendable).length;
    return { count, left_out: tabs.length - count, origins: EVERY_SITE, permissions: ["tabs"], granted: false };
  }
  const usable = tabs.filter(sendable);
  const origins = [...new Set(usable.map((t) => originPattern(t.url)).filter(Boolean))].sort();
  return { count: usable.length, left_out: tabs.length - usable.length, origins,
           granted: await grantedFor(origins) };
}

// The sources the popup offers for the tab it was opened on: {highlighted?, window, group?}.
export async function tabSources(refTab) {
  const all = await api.tabs.query({ windowId: refTab.windowId });
  const out = { window: await describe(all) };
  const highlighted = all.filter((t) => t.highlighted);
  if (highlighted.length > 1) out.highlighted = await describe(highlighted);
  const group = refTab.groupId;
  if (Number.isInteger(group) && group >= 0) out.group = await describe(all.filter((t) => t.groupId === group));
  return out;
}

// The tabs of one source, in the window's order.
export async function tabsOf(source, refTab) {
  const all = (await api.tabs.query({ windowId: refTab.windowId })).sort((a, b) => a.index - b.index);
  let picked = all;
  if (source === "highlighted") picked = all.filter((t) => t.highlighted);
  else if (source === "group") picked = all.filter((t) => t.groupId === refTab.groupId && t.groupId >= 0);
  else if (source !== "window") throw Object.assign(new Error(`unknown source of tabs: ${source}`), { code: "bad_request" });
  return picked.filter(sendable);
}

// ---- links in a selection (injected into the page: self-contained) ---------------------------

export function linksInSelection() {
  const sel = getSelection();
  const seen = new Set();
  const out = [];
  for (let i = 0; sel && i < sel.rangeCount; i++) {
    const range = sel.getRangeAt(i);
    const root = range.commonAncestorContainer.nodeType === 1 ? range.commonAncestorContainer
      : range.commonAncestorContainer.parentElement;
    const anchors = root ? [...root.querySelectorAll("a[href]")] : [];
    const own = root?.closest?.("a[href]");
    if (own) anchors.push(own);
    for (const a of anchors) {
      if (!range.intersectsNode(a)) continue;
      const href = a.href;
      if (!/^https?:/i.test(href) || seen.has(href.split("#")[0])) continue;
      seen.add(href.split("#")[0]);
      out.push({ url: href, text: (a.innerText || a.textContent || "").trim().slice(0, 300) });
    }
  }
  return out;
}

// ---- bookmarks (an optional permission, asked for when the person picks a folder) -----------

// Every folder with at least one web address in it: {id, title, path, count}.
export async function bookmarkFolders() {
  const [root] = await api.bookmarks.getTree();
  const out = [];
  const walk = (node, path) => {
    const links = (node.children || []).filter((c) => c.url && /^https?:/i.test(c.url)).length;
    const here = node.title ? [...path, node.title] : path;
    if (node.children && links) out.push({ id: node.id, title: node.title || "(untitled)", path: here.join(" / "), count: links });
    for (const c of node.children || []) if (c.children) walk(c, here);
  };
  walk(root, []);
  return out;
}

// The web addresses directly in a folder, in its order, each once.
export async function bookmarkLinks(folderId) {
  const children = await api.bookmarks.getChildren(String(folderId));
  const seen = new Set();
  const out = [];
  for (const c of children) {
    if (!c.url || !/^https?:/i.test(c.url) || seen.has(c.url)) continue;
    seen.add(c.url);
    out.push({ url: c.url, text: c.title || "" });
  }
  return out;
}
