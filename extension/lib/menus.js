// Context menus: for a page, a selection, a link, an image and the links of a selection (as
// one batch), one entry per workflow template that has a capture slot. Item ids are
// "<kind>:<template name>", so the click handler needs no lookup table that a restarted
// service worker would have lost.

import { api } from "./ext.js";

const KINDS = {
  page: "Send page to workflow",
  selection: "Send selection to workflow",
  link: "Send link to workflow",
  image: "Send image to workflow",
  links: "Send links in selection",
};
// The context a kind's items show in, where it is not the kind's own name.
const CONTEXTS = { links: "selection" };

const NONE_ID = "none";

export function parseMenuId(id) {
  const text = String(id);
  const at = text.indexOf(":");
  if (at < 0) return null;
  const kind = text.slice(0, at);
  if (!(kind in KINDS)) return null;
  return { kind, template: text.slice(at + 1) };
}

function create(props) {
  return new Promise((resolve) => {
    api.contextMenus.create(props, () => {
      // Read lastError so Chromium does not log it as unchecked; a duplicate is harmless.
      void (globalThis.chrome?.runtime?.lastError ?? api.runtime.lastError);
      resolve();
    });
  });
}

let chain = Promise.resolve();

// Rebuild every item. Serialised: two refreshes in a row must not interleave their creates.
export function refreshMenus(templates, { hostReachable = true } = {}) {
  chain = chain.then(() => build(templates, hostReachable)).catch((err) => console.error("menus", err));
  return chain;
}

async function build(templates, hostReachable) {
  await api.contextMenus.removeAll();
  const usable = (templates || []).filter((t) => t.has_capture_slot !== false);
  for (const [kind, title] of Object.entries(KINDS)) {
    const contexts = [CONTEXTS[kind] || kind];
    await create({ id: kind, title, contexts });
    if (!usable.length) {
      await create({
        id: `${NONE_ID}:${kind}`,
        parentId: kind,
        title: hostReachable ? "No workflow takes a page yet" : "Hybrid Engine is not connected: open its popup",
        contexts,
        enabled: false,
      });
      continue;
    }
    for (const t of usable) {
      await create({ id: `${kind}:${t.name}`, parentId: kind, title: t.name, contexts });
    }
  }
}
