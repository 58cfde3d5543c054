// The one wrapper over the WebExtension APIs: `browser` in Firefox, `chrome` in Chromium
// browsers. Both return promises in Manifest V3; the few places where they differ are
// named functions here, so the rest of the extension never asks which browser it is in.

export const api = globalThis.browser ?? globalThis.chrome;

// The error text a native port died with. Chromium sets runtime.lastError inside
// onDisconnect; Firefox puts an Error on port.error. Null: the host closed cleanly.
export function portError(port) {
  if (port && port.error) return port.error.message || String(port.error);
  const last = globalThis.chrome?.runtime?.lastError ?? api.runtime.lastError;
  return last ? last.message || String(last) : null;
}

// A message sent to extension pages that may not be open: no listener is not an error.
export async function broadcast(message) {
  try {
    await api.runtime.sendMessage(message);
  } catch {
    // "Receiving end does not exist": no popup or options page is open.
  }
}

// storage.session holds what must survive the service worker being stopped but not the
// browser: the last host error, connection state. Firefox < 115 lacks it: fall back to
// memory (its background page is not stopped while the port is open anyway).
const memorySession = new Map();
export const session = {
  async get(key) {
    if (api.storage.session) return (await api.storage.session.get(key))[key];
    return memorySession.get(key);
  },
  async set(values) {
    if (api.storage.session) return api.storage.session.set(values);
    for (const [k, v] of Object.entries(values)) memorySession.set(k, v);
  },
};

export const local = {
  async get(key, fallback = undefined) {
    const got = await api.storage.local.get(key);
    return got[key] === undefined ? fallback : got[key];
  },
  async getMany(keys) {
    return api.storage.local.get(keys);
  },
  set(values) {
    return api.storage.local.set(values);
  },
  remove(keys) {
    return api.storage.local.remove(keys);
  },
};
