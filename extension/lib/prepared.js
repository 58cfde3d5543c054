// The page the popup captured for its estimate, kept so that its "Send" does not read the
// tab a second time. A page can be megabytes and the service worker may live for hours:
// an entry is dropped when its tab closes or loads another page, when it is older than
// MAX_AGE_MS, and beyond the MAX_TABS newest. The tab listeners are added only while an
// entry is kept (and the worker is alive): at the top level they would wake the worker for
// every page load in the browser, with nothing to drop.

import { api } from "./ext.js";

const MAX_AGE_MS = 30000;
const MAX_TABS = 4;

export class PreparedPages {
  constructor({ maxAgeMs = MAX_AGE_MS, maxTabs = MAX_TABS, now = () => Date.now() } = {}) {
    this.maxAgeMs = maxAgeMs;
    this.maxTabs = maxTabs;
    this.now = now;
    this.entries = new Map(); // tab id -> {url, captured, at}, oldest first
    this.timer = null;
    this.watching = false;
    this.onRemoved = (tabId) => this.evict(tabId);
    this.onUpdated = (tabId, change) => {
      if (change.url || change.status === "loading") this.evict(tabId);
    };
  }

  // The captured page of this tab when it is fresh and still of this URL.
  get(tabId, url) {
    this.sweep();
    const entry = this.entries.get(tabId);
    return entry && entry.url === url ? entry.captured : null;
  }

  put(tabId, url, captured) {
    this.entries.delete(tabId); // re-inserted last: the Map's order is the age order
    this.entries.set(tabId, { url, captured, at: this.now() });
    while (this.entries.size > this.maxTabs) this.entries.delete(this.entries.keys().next().value);
    this.sweep();
  }

  has(tabId) {
    return this.entries.has(tabId);
  }

  evict(tabId) {
    if (this.entries.delete(tabId)) this.sweep();
  }

  clear() {
    this.entries.clear();
    this.sweep();
  }

  get size() {
    return this.entries.size;
  }

  // Drop what is too old, and come back when the next entry will be.
  sweep() {
    const oldest = this.now() - this.maxAgeMs;
    for (const [tabId, entry] of this.entries) if (entry.at < oldest) this.entries.delete(tabId);
    clearTimeout(this.timer);
    this.timer = null;
    const first = this.entries.values().next().value;
    if (first) this.timer = setTimeout(() => this.sweep(), first.at + this.maxAgeMs - this.now() + 1);
    this.watch(this.entries.size > 0);
  }

  watch(on) {
    if (on === this.watching || !api?.tabs) return;
    const how = on ? "addListener" : "removeListener";
    api.tabs.onRemoved[how](this.onRemoved);
    api.tabs.onUpdated[how](this.onUpdated);
    this.watching = on;
  }
}
