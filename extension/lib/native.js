// The one native-messaging port to the `hybrid_engine` host (CONTRACT.md, "Native
// messaging"): connect, hello, requests with replies matched by id and timeouts, chunked
// replies reassembled, events handed on, reconnect with backoff after the host exits,
// and a persistent outbox for captures made while the host cannot be reached.
//
// States: "idle" -> "connecting" (port open, hello sent) -> "connected" (hello answered)
// -> "disconnected" (port gone; a reconnect is scheduled). The last error text the
// browser gave ("Specified native messaging host not found.", "Native host has exited.")
// is kept in storage.session so the popup can show it after the worker restarts.

import { api, local, portError, session } from "./ext.js";

export const HOST_NAME = "hybrid_engine";
export const PROTOCOL = 1;

const BACKOFF_FIRST_MS = 250;
const BACKOFF_CAP_MS = 15000;
const HELLO_TIMEOUT_MS = 15000;
const DEFAULT_TIMEOUT_MS = 20000;
const CONNECT_WAIT_MS = 8000;
const OUTBOX_INDEX = "outbox"; // keys of captures waiting to be delivered, oldest first
const REFUSED_INDEX = "outboxRefused"; // keys of captures the host refused (kept to be seen, then discarded)

// Transport failures: the request may be sent again later. Anything else is the host's answer.
export const TRANSPORT_CODES = new Set(["host_unavailable", "disconnected", "timeout"]);

export class HostError extends Error {
  constructor(code, message, fields = {}) {
    super(message);
    this.name = "HostError";
    this.code = code;
    Object.assign(this, fields);
  }
  toJSON() {
    return { code: this.code, message: this.message };
  }
}

export class NativeHost {
  constructor({ name = HOST_NAME, onEvent = () => {}, onState = () => {}, onConnected = () => {},
                onDelivered = () => {}, onOutboxChanged = () => {} } = {}) {
    this.name = name;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onConnected = onConnected;
    this.onDelivered = onDelivered;
    this.onOutboxChanged = onOutboxChanged;
    this.port = null;
    this.status = "idle";
    this.hello = null;
    this.error = null; // the last error text, kept after a reconnect succeeds (see errorAt)
    this.errorAt = null;
    this.connectedAt = null;
    this.attempt = 0; // failed connects since the last success: drives the backoff
    this.reconnects = 0; // successful connects after a lost connection
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer, type}
    this.chunks = new Map(); // JSON id -> {count, parts}
    this.retryTimer = null;
    this.retryAt = null;
    this.waiters = []; // resolved on hello, rejected on failure
    this.everConnected = false;
    this.flushing = null;
  }

  // ---- connection ---------------------------------------------------------------------

  snapshot() {
    return {
      status: this.status,
      error: this.error,
      errorAt: this.errorAt,
      connectedAt: this.connectedAt,
      retryAt: this.retryAt,
      attempt: this.attempt,
      reconnects: this.reconnects,
      everConnected: this.everConnected,
      hello: this.hello,
    };
  }

  async restore() {
    const saved = await session.get("hostError");
    if (saved && !this.error) {
      this.error = saved.message;
      this.errorAt = saved.at;
    }
  }

  setStatus(status) {
    this.status = status;
    this.onState(this.snapshot());
  }

  async rememberError(message) {
    this.error = message;
    this.errorAt = Date.now();
    await session.set({ hostError: { message, at: this.errorAt } });
  }

  connect() {
    if (this.port) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
    let port;
    try {
      port = api.runtime.connectNative(this.name);
    } catch (err) {
      this.handleDisconnect(null, err.message || String(err));
      return;
    }
    this.port = port;
    this.setStatus("connecting");
    port.onMessage.addListener((msg) => this.handleFrame(port, msg));
    port.onDisconnect.addListener(() => this.handleDisconnect(port, portError(port)));
    this.send({ type: "hello", protocol: PROTOCOL }, { timeoutMs: HELLO_TIMEOUT_MS, port, direct: true })
      .then((hello) => this.handleHello(port, hello))
      .catch((err) => {
        if (this.port === port && err.code === "timeout") {
          this.rememberError(`The host did not answer hello within ${HELLO_TIMEOUT_MS / 1000} s.`);
          this.dropPort(port, "The host did not answer hello.");
        } else if (this.port === port && err.code !== "disconnected") {
          // An error reply to hello (e.g. forbidden): the host runs but refuses us.
          this.rememberError(`${err.code}: ${err.message}`);
          this.dropPort(port, err.message);
        }
      });
  }

  handleHello(port, hello) {
    if (this.port !== port) return;
    const wasLost = this.everConnected;
    this.hello = hello;
    this.attempt = 0;
    this.connectedAt = Date.now();
    this.everConnected = true;
    if (wasLost) this.reconnects += 1;
    this.setStatus("connected");
    for (const w of this.waiters.splice(0)) w.resolve();
    Promise.resolve(this.onConnected({ hello, reconnected: wasLost })).catch(() => {});
    this.flushOutbox();
  }

  // Drop the port ourselves (a hello that never came); the normal disconnect path follows.
  dropPort(port, message) {
    try {
      port.disconnect();
    } catch {
      // already gone
    }
    this.handleDisconnect(port, message);
  }

  handleDisconnect(port, message) {
    if (port && this.port !== port) return; // an old port, already handled
    this.port = null;
    this.chunks.clear();
    const text = message || "Native host has exited.";
    this.rememberError(text);
    const err = new HostError(this.status === "connected" ? "disconnected" : "host_unavailable", text);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
    for (const w of this.waiters.splice(0)) w.reject(err);
    this.hello = null;
    this.connectedAt = null;
    this.attempt += 1;
    this.setStatus("disconnected");
    this.scheduleReconnect();
  }

  backoffMs() {
    const base = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, this.attempt - 1));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  scheduleReconnect() {
    clearTimeout(this.retryTimer);
    const delay = this.backoffMs();
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.onState(this.snapshot());
  }

  // A person is waiting (the popup opened, a capture was made): skip the backoff.
  connectNow() {
    if (this.port) return;
    this.attempt = Math.min(this.attempt, 1);
    this.connect();
  }

  whenConnected(timeoutMs = CONNECT_WAIT_MS) {
    if (this.status === "connected") return Promise.resolve();
    this.connectNow();
    if (this.status === "connected") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve: () => { clearTimeout(timer); resolve(); },
                       reject: (e) => { clearTimeout(timer); reject(e); } };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new HostError("host_unavailable", this.error || "The host did not answer in time."));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  // ---- frames -------------------------------------------------------------------------

  handleFrame(port, msg) {
    if (this.port !== port || msg === null || typeof msg !== "object") return;
    if ("chunk" in msg && "chunks" in msg && "data" in msg && !("ok" in msg)) {
      const whole = this.reassemble(msg);
      if (whole) this.dispatch(whole);
      return;
    }
    this.dispatch(msg);
  }

  // {"id", "chunk": i, "chunks": n, "data": "<slice of the reply's JSON text>"}, i = 0..n-1.
  reassemble(msg) {
    const key = JSON.stringify(msg.id ?? null);
    const { chunk, chunks, data } = msg;
    if (!Number.isInteger(chunk) || !Number.isInteger(chunks) || typeof data !== "string") {
      return this.chunkFailed(key, msg.id, "a chunk frame with a bad chunk, chunks or data field");
    }
    if (chunk === 0) this.chunks.set(key, { count: chunks, parts: [] });
    const series = this.chunks.get(key);
    if (!series || series.count !== chunks || series.parts.length !== chunk) {
      return this.chunkFailed(key, msg.id, `chunk ${chunk} of ${chunks} arrived out of order`);
    }
    series.parts.push(data);
    const p = this.pending.get(msg.id);
    if (p && p.onProgress) p.onProgress(series.parts.length, chunks);
    if (series.parts.length < chunks) return null;
    this.chunks.delete(key);
    try {
      return JSON.parse(series.parts.join(""));
    } catch (err) {
      return this.chunkFailed(key, msg.id, `the reassembled reply is not JSON: ${err.message}`);
    }
  }

  chunkFailed(key, id, why) {
    this.chunks.delete(key);
    const p = this.pending.get(id);
    if (p) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new HostError("bad_frame", why));
    }
    return null;
  }

  dispatch(msg) {
    if (typeof msg.event === "string" && !("ok" in msg)) {
      try {
        this.onEvent(msg);
      } catch (err) {
        console.error("event handler failed", msg.event, err);
      }
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return; // a reply we stopped waiting for
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) {
      p.resolve(msg.result ?? {});
    } else {
      const e = msg.error || {};
      p.reject(new HostError(e.code || "internal", e.message || "the host answered with an error", e));
    }
  }

  // ---- requests -----------------------------------------------------------------------

  send(message, { timeoutMs = DEFAULT_TIMEOUT_MS, port = this.port, onProgress = null } = {}) {
    if (!port) {
      return Promise.reject(new HostError("host_unavailable", this.error || "The host is not connected."));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HostError("timeout", `no reply to ${message.type} within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, type: message.type, onProgress });
      try {
        port.postMessage({ id, ...message });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new HostError("disconnected", err.message || String(err)));
      }
    });
  }

  // A request that first waits (briefly) for the host to be reachable.
  async request(type, fields = {}, options = {}) {
    await this.whenConnected(options.connectTimeoutMs);
    return this.send({ ...fields, type }, options);
  }

  // ---- captures and the outbox ----------------------------------------------------------
  //
  // A capture is delivered at once when the host answers; when it cannot be reached (or the
  // port dies before the reply) it is written to storage.local and delivered, in order,
  // on the next successful connect. At least once: a capture in flight when the host died
  // may be sent again (the host can dedupe by page.metadata.capture_id).

  async capture(template, page, { timeoutMs = 120000 } = {}) {
    const key = newKey();
    page = { ...page, metadata: { ...(page.metadata || {}), capture_id: key } };
    const item = { key, template, page, queuedAt: Date.now(), attempts: 0 };
    const pendingBefore = (await this.outboxKeys()).length;
    if (pendingBefore === 0) {
      try {
        const result = await this.request("capture", { template, page }, { timeoutMs });
        return { delivered: true, result, key: item.key };
      } catch (err) {
        if (!TRANSPORT_CODES.has(err.code)) throw err;
        item.lastError = err.message;
      }
    }
    // The host is away, or older captures wait: queue behind them so order is kept.
    await this.enqueue(item);
    if (this.status === "connected") this.flushOutbox();
    else this.connectNow();
    return { delivered: false, queued: true, key: item.key, reason: item.lastError || this.error };
  }

  async outboxKeys() {
    return local.get(OUTBOX_INDEX, []);
  }

  async outboxItems({ refused = false } = {}) {
    const keys = await this.outboxKeys();
    if (refused) keys.push(...(await local.get(REFUSED_INDEX, [])));
    if (!keys.length) return [];
    const got = await local.getMany(keys.map((k) => `${OUTBOX_INDEX}:${k}`));
    return keys.map((k) => got[`${OUTBOX_INDEX}:${k}`]).filter(Boolean);
  }

  async enqueue(item) {
    // The item first, the index second: a crash in between leaves an orphan, never a hole.
    await local.set({ [`${OUTBOX_INDEX}:${item.key}`]: item });
    const keys = await this.outboxKeys();
    keys.push(item.key);
    await local.set({ [OUTBOX_INDEX]: keys });
    this.onOutboxChanged(keys.length);
  }

  async dequeue(key) {
    const keys = (await this.outboxKeys()).filter((k) => k !== key);
    const refused = (await local.get(REFUSED_INDEX, [])).filter((k) => k !== key);
    await local.set({ [OUTBOX_INDEX]: keys, [REFUSED_INDEX]: refused });
    await local.remove(`${OUTBOX_INDEX}:${key}`);
    this.onOutboxChanged(keys.length + refused.length);
  }

  // The host answered with an error (an unknown template, a bad page): sending it again
  // would fail again. It leaves the queue but stays in storage until the person discards it.
  async refuse(item, err) {
    item.failed = { code: err.code, message: err.message, at: Date.now() };
    await local.set({ [`${OUTBOX_INDEX}:${item.key}`]: item });
    const keys = (await this.outboxKeys()).filter((k) => k !== item.key);
    const refused = [...(await local.get(REFUSED_INDEX, [])), item.key];
    await local.set({ [OUTBOX_INDEX]: keys, [REFUSED_INDEX]: refused });
    this.onOutboxChanged(keys.length + refused.length);
  }

  flushOutbox() {
    if (!this.flushing) {
      this.flushing = this.flushOnce().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  async flushOnce() {
    let delivered = 0;
    for (const item of await this.outboxItems()) {
      if (this.status !== "connected") break;
      item.attempts = (item.attempts || 0) + 1;
      try {
        const result = await this.send({ type: "capture", template: item.template, page: item.page },
                                        { timeoutMs: 120000 });
        await this.dequeue(item.key);
        delivered += 1;
        Promise.resolve(this.onDelivered(item, result)).catch(() => {});
      } catch (err) {
        if (TRANSPORT_CODES.has(err.code)) break; // the host went away again: keep the rest
        await this.refuse(item, err);
      }
    }
    return delivered;
  }
}

function newKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
