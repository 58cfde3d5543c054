// The one native-messaging port to the `hybrid_engine` host (docs/PROTOCOL.md): connect,
// hello, requests with replies matched by id and timeouts, chunked replies reassembled,
// events handed on, reconnect with backoff after the host exits, and the delivery of
// captures through the outbox (lib/outbox.js).
//
// States: "idle" -> "connecting" (port open, hello sent) -> "connected" (hello answered)
// -> "disconnected" (port gone; a reconnect is scheduled). The last error text the
// browser gave ("Specified native messaging host not found.", "Native host has exited.")
// is kept in storage.session so the popup can show it after the worker restarts.

import { api, portError, session } from "./ext.js";
import { Outbox } from "./outbox.js";

const HOST_NAME = "hybrid_engine";
const PROTOCOL = 1;

const BACKOFF_FIRST_MS = 250;
const BACKOFF_CAP_MS = 15000;
const HELLO_TIMEOUT_MS = 15000;
const DEFAULT_TIMEOUT_MS = 20000;
const CONNECT_WAIT_MS = 8000;
const CAPTURE_TIMEOUT_MS = 120000;

// Transport failures: the request may be sent again later. Anything else is the host's answer.
const TRANSPORT_CODES = new Set(["host_unavailable", "disconnected", "timeout"]);

class HostError extends Error {
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
    this.outbox = new Outbox({ onChanged: onOutboxChanged });
    this.captureWaiters = new Map(); // capture id -> resolve: a caller waiting for its answer
    this.flushWanted = false;
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

  // Called without waiting: storage failing must not become an unhandled rejection.
  async rememberError(message) {
    this.error = message;
    this.errorAt = Date.now();
    try {
      await session.set({ hostError: { message, at: this.errorAt } });
    } catch (err) {
      console.error("could not keep the host error in storage.session", err);
    }
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
    // Captures in the outbox stay there; whoever waits for one hears that it is kept.
    this.keepAll(text);
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
  // One delivery path: a capture is written to the outbox first, then the flush sends
  // captures one at a time, oldest first, and removes each only after the host answered
  // for it. At least once: a capture in flight when the port died is sent again, with the
  // same page.metadata.capture_id, and the host gives back the run it already made, so
  // each capture makes exactly one run.

  // Wait (while the person waits) for this capture's answer: {delivered, result} when the
  // host made its run, {queued, reason} when it cannot be reached now (it stays in the
  // outbox), {discarded} when it was discarded meanwhile; a refusal is thrown.
  async capture(template, page, { connectTimeoutMs = CONNECT_WAIT_MS, reuse } = {}) {
    const { id } = await this.outbox.add(template, page, reuse ? { reuse } : {});
    const outcome = new Promise((resolve) => this.captureWaiters.set(id, resolve));
    this.whenConnected(connectTimeoutMs).then(() => this.flushOutbox(),
                                              (err) => this.settle(id, { queued: true, reason: err.message }));
    const result = await outcome;
    if (result.error) throw result.error;
    return { id, delivered: false, queued: false, ...result };
  }

  settle(id, outcome) {
    const resolve = this.captureWaiters.get(id);
    if (!resolve) return false;
    this.captureWaiters.delete(id);
    resolve(outcome);
    return true;
  }

  async discard(id) {
    const out = await this.outbox.discard(id);
    if (out.discarded) this.settle(id, { discarded: true, sent: out.sent });
    return out;
  }

  async retry(id) {
    const header = await this.outbox.retry(id);
    if (header) {
      this.connectNow();
      if (this.status === "connected") this.flushOutbox();
    }
    return { retried: !!header };
  }

  // Asked again while running: the running flush goes round once more, so a capture made
  // (or a connection won) near its end is not left waiting for the next trigger.
  flushOutbox() {
    this.flushWanted = true;
    if (!this.flushing) {
      this.flushing = this.flushLoop()
        .catch((err) => {
          console.error("outbox flush failed", err);
          return 0;
        })
        .finally(() => {
          this.flushing = null;
        });
    }
    return this.flushing;
  }

  async flushLoop() {
    let delivered = 0;
    while (this.flushWanted) {
      this.flushWanted = false;
      delivered += await this.flushOnce();
    }
    return delivered;
  }

  async flushOnce() {
    let delivered = 0;
    while (this.status === "connected") {
      const next = await this.outbox.oldestWaiting();
      if (!next) break;
      let sending;
      try {
        sending = await this.outbox.beginSend(next.id, (body) => this.send(
          { type: "capture", template: body.template, page: body.page, ...(body.reuse ? { reuse: body.reuse } : {}) },
          { timeoutMs: CAPTURE_TIMEOUT_MS }));
      } catch (err) {
        if (err.code === "body_missing") { // dropped from the outbox: nobody can send it
          this.settle(next.id, { error: err });
          continue;
        }
        this.keepAll(`storage failed: ${err.message}`); // the outbox cannot be read: try on the next trigger
        break;
      }
      if (!sending) continue; // discarded meanwhile
      let result;
      try {
        result = await sending.reply;
      } catch (err) {
        if (TRANSPORT_CODES.has(err.code)) {
          // The host went away (or is stuck): keep it and everything behind it.
          await this.outbox.failed(next.id, err.message).catch(() => {});
          this.keepAll(err.message);
          break;
        }
        // A refusal: the person who is waiting for it hears it now and it leaves the outbox;
        // with nobody waiting it stays, marked, for the person to see.
        // A page of a site ruled "never" is not kept either: its text must not stay stored.
        const waiting = this.captureWaiters.has(next.id) || err.code === "site_never";
        this.settle(next.id, { error: err });
        try {
          await (waiting ? this.outbox.delivered(next.id) : this.outbox.refuse(next.id, err));
        } catch (storageErr) {
          console.error("could not record a refused capture in the outbox", storageErr);
          this.keepAll(`storage failed: ${storageErr.message}`);
          break; // going on would send it again at once
        }
        continue;
      }
      try {
        await this.outbox.delivered(next.id);
      } catch (err) {
        // Still in the outbox: sent again on the next trigger, and the host answers with the
        // same run (capture_id). Going on now would only send it again at once.
        console.error("could not remove a delivered capture from the outbox", err);
        this.keepAll(`storage failed: ${err.message}`);
        break;
      }
      delivered += 1;
      if (!this.settle(next.id, { delivered: true, result })) {
        Promise.resolve(this.onDelivered(sending.header, result)).catch(() => {});
      }
    }
    return delivered;
  }

  // Tell everyone still waiting that their capture is kept for later.
  keepAll(reason) {
    for (const id of [...this.captureWaiters.keys()]) this.settle(id, { queued: true, reason });
  }
}
