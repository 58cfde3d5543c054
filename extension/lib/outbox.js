// The outbox: every capture is written here before it is sent and leaves only when the host
// has answered for it. One capture is two keys in storage.local:
//
//   outbox:<id>       a small header {id, seq, template, title, url, kind, bytes, created,
//                     attempts, last_error, refused}: what the popup lists
//   outbox-body:<id>  {template, page}: what is sent (a page can be megabytes)
//
// with <id> the capture's page.metadata.capture_id, by which the host de-duplicates a
// capture sent again after a lost reply. No key is shared by two captures, so no change
// rewrites a list another change is editing; and every change still goes through one
// promise chain (`serial`), so a discard cannot land between "still there?" and "mark
// sent" of a flush. Only the background uses this module; extension pages send intents.
//
// The headers are kept in memory too (loaded once per worker start, then changed only
// here), so listing the outbox reads no storage at all.

import { api, local } from "./ext.js";

const HEADER_PREFIX = "outbox:";
const BODY_PREFIX = "outbox-body:";
// The earlier layout: one list of keys (and one of refused keys) rewritten by every change.
const OLD_INDEX_KEYS = ["outbox", "outboxRefused"];
const TITLE_MAX = 300;
const URL_MAX = 2048;

class OutboxError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "OutboxError";
    this.code = code;
  }
}

export class Outbox {
  constructor({ onChanged = () => {} } = {}) {
    this.onChanged = onChanged;
    this.headers = new Map(); // id -> header; the same as storage once loaded
    this.loaded = false;
    this.nextSeq = 1;
    this.tail = Promise.resolve();
  }

  // Run fn after every change queued before it; a failed change does not stop the chain.
  serial(fn) {
    const run = this.tail.then(async () => {
      if (!this.loaded) await this.load();
      return fn();
    });
    this.tail = run.catch(() => {});
    return run;
  }

  changed() {
    try {
      this.onChanged(this.headers.size);
    } catch (err) {
      console.error("outbox listener failed", err);
    }
  }

  // ---- what the popup and the flush read ----------------------------------------------

  count() {
    return this.serial(() => this.headers.size);
  }

  // Headers only, oldest first: never a page body.
  list() {
    return this.serial(() => this.sorted().map((h) => ({ ...h })));
  }

  // The oldest capture that is waiting to be sent (refused ones wait for the person).
  oldestWaiting() {
    return this.serial(() => {
      const next = this.sorted().find((h) => !h.refused);
      return next ? { ...next } : null;
    });
  }

  sorted() {
    return [...this.headers.values()].sort((a, b) => a.seq - b.seq);
  }

  // ---- changes ----------------------------------------------------------------------------

  // Write a capture (header and body in one set) and return its header. The page gets the
  // id as page.metadata.capture_id.
  add(template, page, extra = {}) {
    return this.serial(async () => {
      const id = newId();
      const body = { template, page: { ...page, metadata: { ...(page.metadata || {}), capture_id: id } }, ...extra };
      const header = headerOf(id, this.nextSeq++, template, page, Date.now());
      await local.set({ [HEADER_PREFIX + id]: header, [BODY_PREFIX + id]: body });
      this.headers.set(id, header);
      this.changed();
      return { ...header };
    });
  }

  // Count an attempt, then hand the body to `post` (which sends it and returns the reply's
  // promise) inside the same step of the chain: a discard is either before it (nothing is
  // sent) or after it (the discard says the capture was sent). Returns {header, reply}, or
  // null when the capture is gone (discarded, or delivered by an earlier flush).
  beginSend(id, post) {
    return this.serial(async () => {
      const header = this.headers.get(id);
      if (!header) return null;
      const body = await local.get(BODY_PREFIX + id);
      if (!body || !body.page) {
        // A header without a body cannot be sent by anyone: drop it rather than block the queue.
        await this.removeKeys(id);
        throw new OutboxError("body_missing", `the page of capture ${id} is no longer in storage`);
      }
      const sent = { ...header, attempts: header.attempts + 1 };
      await local.set({ [HEADER_PREFIX + id]: sent });
      this.headers.set(id, sent);
      return { header: { ...sent }, reply: post(body) };
    });
  }

  // The host answered for it (a run, or a run it had already made for this id).
  delivered(id) {
    return this.serial(() => this.removeKeys(id));
  }

  // The host could not be reached for it: keep it, with why.
  failed(id, message) {
    return this.update(id, (h) => { h.last_error = message; });
  }

  // The host answered with an error: sending it again as it is would fail again. It stays
  // (body too) until the person discards it or sends it again.
  refuse(id, err) {
    return this.update(id, (h) => {
      h.refused = { code: err.code || "internal", message: err.message || String(err), at: Date.now() };
      h.last_error = h.refused.message;
    });
  }

  // Back in the queue after a refusal (the person fixed the template, say).
  retry(id) {
    return this.update(id, (h) => { h.refused = null; });
  }

  // {discarded: true, sent}: removed; `sent` says whether it had been handed to the host
  // before (then the host may have made its run: at most one). {discarded: false}: it was
  // no longer here (the host had already answered for it).
  discard(id) {
    return this.serial(async () => {
      const header = this.headers.get(id);
      if (!header) return { discarded: false };
      await this.removeKeys(id);
      return { discarded: true, sent: header.attempts > 0 };
    });
  }

  // Change a header that is still there; a capture discarded meanwhile is not brought back.
  update(id, change) {
    return this.serial(async () => {
      if (!this.headers.has(id)) return null;
      const header = { ...this.headers.get(id) };
      change(header);
      await local.set({ [HEADER_PREFIX + id]: header });
      this.headers.set(id, header);
      this.changed();
      return { ...header };
    });
  }

  async removeKeys(id) {
    await local.remove([HEADER_PREFIX + id, BODY_PREFIX + id]);
    const had = this.headers.delete(id);
    if (had) this.changed();
    return had;
  }

  // ---- start-up -----------------------------------------------------------------------------

  // Read the headers, bring captures of the earlier layout over (the ones its lost-update
  // race left out of its list included: they were never sent), give a body whose header
  // is missing a new header, and drop a header whose body is missing.
  async load() {
    const keys = await allKeys();
    const headerKeys = keys.filter((k) => k.startsWith(HEADER_PREFIX));
    const bodyIds = new Set(keys.filter((k) => k.startsWith(BODY_PREFIX)).map((k) => k.slice(BODY_PREFIX.length)));
    const got = headerKeys.length ? await local.getMany(headerKeys) : {};
    const headers = new Map();
    const oldItems = [];
    const dropped = [];
    for (const [key, value] of Object.entries(got)) {
      const id = key.slice(HEADER_PREFIX.length);
      if (value && value.page) oldItems.push([id, value]);
      else if (value && bodyIds.has(id)) headers.set(id, value);
      else dropped.push(key);
    }
    let seq = Math.max(0, ...[...headers.values()].map((h) => Number(h.seq) || 0)) + 1;
    const writes = {};
    // Oldest first, as the earlier layout queued them.
    oldItems.sort((a, b) => (a[1].queuedAt || 0) - (b[1].queuedAt || 0));
    for (const [id, item] of oldItems) {
      const header = headerOf(id, seq++, item.template, item.page, item.queuedAt);
      header.attempts = item.attempts || 0;
      header.last_error = item.failed?.message || item.lastError || null;
      header.refused = item.failed ? { code: item.failed.code, message: item.failed.message, at: item.failed.at } : null;
      writes[HEADER_PREFIX + id] = header;
      writes[BODY_PREFIX + id] = { template: item.template, page: { ...item.page,
        metadata: { ...(item.page.metadata || {}), capture_id: item.page.metadata?.capture_id || id } } };
      headers.set(id, header);
    }
    const orphans = [...bodyIds].filter((id) => !headers.has(id));
    const bodies = orphans.length ? await local.getMany(orphans.map((id) => BODY_PREFIX + id)) : {};
    for (const id of orphans) {
      const body = bodies[BODY_PREFIX + id];
      if (body && body.page && body.template) {
        const header = headerOf(id, seq++, body.template, body.page, Date.now());
        writes[HEADER_PREFIX + id] = header;
        headers.set(id, header);
      } else {
        dropped.push(BODY_PREFIX + id);
      }
    }
    if (Object.keys(writes).length) await local.set(writes);
    const stale = [...dropped, ...OLD_INDEX_KEYS.filter((k) => keys.includes(k))];
    if (stale.length) await local.remove(stale);
    this.headers = headers;
    this.nextSeq = seq;
    this.loaded = true;
    this.changed();
  }
}

function headerOf(id, seq, template, page, created) {
  return {
    id, seq, template,
    title: cut(page.title, TITLE_MAX),
    url: cut(page.source_url, URL_MAX),
    kind: page.metadata?.kind || "page",
    bytes: typeof page.content === "string" ? page.content.length : 0,
    created: created || Date.now(),
    attempts: 0,
    last_error: null,
    refused: null,
  };
}

// Key names only where the browser can (Chromium 130+, Firefox 143+); else everything once.
async function allKeys() {
  const area = api.storage.local;
  if (typeof area.getKeys === "function") return area.getKeys();
  return Object.keys(await area.get(null));
}

function cut(text, max) {
  if (typeof text !== "string") return null;
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
