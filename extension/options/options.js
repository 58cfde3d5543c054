// Settings, and what the host says about itself. Renders and sends intents to the
// background, like the popup; never talks to the host directly.

import { api } from "../lib/ext.js";
import { usd } from "../lib/format.js";
import { drawSpend, spendBars } from "./spendchart.js";

const $ = (id) => document.getElementById(id);
const MAX_MB = 60;
const PROVIDERS = ["openai", "deepseek", "gemini", "local"];
let settings = {};
let hello = null;
let spendDays = null;

async function call(type, fields = {}) {
  const reply = await api.runtime.sendMessage({ type, ...fields });
  if (!reply?.ok) throw Object.assign(new Error(reply?.error?.message || "failed"), { code: reply?.error?.code });
  return reply.result;
}

// Text with `command` spans shown as code.
function setText(el, text) {
  el.textContent = "";
  text.split("`").forEach((part, i) => {
    if (!part) return;
    if (i % 2) {
      const code = document.createElement("code");
      code.textContent = part;
      el.append(code);
    } else {
      el.append(part);
    }
  });
}

// Called from change listeners without waiting: a failed save is shown, never left unhandled.
async function save(patch) {
  try {
    settings = await call("settings.set", { settings: patch });
  } catch (err) {
    $("saved").textContent = `Not saved: ${err.message}`;
    return;
  }
  $("saved").textContent = "Saved.";
  setTimeout(() => { $("saved").textContent = ""; }, 1500);
}

function renderState(state) {
  settings = state.settings;
  const select = $("default-workflow");
  const names = (state.templates || []).filter((t) => t.has_capture_slot !== false).map((t) => t.name);
  select.textContent = "";
  // "" follows the background's own choice (page-digest when there is one): named, not guessed.
  const automatic = state.automaticTemplate;
  select.append(new Option(automatic ? `Automatic (now ${automatic})` : "Automatic", ""));
  for (const n of names) select.append(new Option(n, n));
  if (settings.defaultTemplate && !names.includes(settings.defaultTemplate)) {
    select.append(new Option(`${settings.defaultTemplate} (not listed by the host)`, settings.defaultTemplate));
  }
  select.value = settings.defaultTemplate || "";
  $("notifications").checked = !!settings.notifications;
  if ($("max-mb").getAttribute("aria-invalid") !== "true" && document.activeElement !== $("max-mb")) {
    $("max-mb").value = String(Math.round((settings.maxCaptureBytes || 8 * 1024 * 1024) / (1024 * 1024)));
  }
  const c = state.connection;
  $("host-connection").textContent = c.status === "connected" ? "connected"
    : `${c.status}${c.error ? `: ${c.error}` : ""}`;
  $("host-version").textContent = c.hello ? `${c.hello.version} (protocol ${c.hello.protocol})` : "unknown";
  $("templates-folder").textContent = state.templatesFolder || "not reported yet";
  const errors = state.templateErrors || [];
  $("template-errors").hidden = !errors.length;
  $("template-errors").textContent = errors.length ? `Templates that did not load: ${errors.join("; ")}` : "";
  hello = c.hello;
}

async function renderHostDetails() {
  if (!hello) {
    $("log-file").textContent = "not reported (host not connected)";
    setText($("providers-note"), "Connect the host to see its providers.");
    setText($("doctor-note"), "`hybrid-engine doctor`, in a terminal, checks every browser's registration "
      + "and prints the fix for each finding.");
    return;
  }
  const types = hello?.capabilities?.types || [];
  try {
    const status = types.includes("host.status") ? await call("host.status") : null;
    $("log-file").textContent = status?.log_file || "not reported";
  } catch (err) {
    $("log-file").textContent = `unavailable: ${err.message}`;
  }
  // Providers: `config` says which have a key and where each key came from (a variable's
  // name or a file, never the key); older hosts list provider names in hello only.
  const list = $("providers");
  list.textContent = "";
  const fromHello = hello?.capabilities?.providers;
  let providers = null;
  let summary = null;
  if (types.includes("config")) {
    try {
      summary = await call("config");
      providers = summary.providers;
    } catch (err) {
      summary = { errors: [err.message] };
    }
  }
  if (!providers && fromHello) providers = fromHello;
  if (providers) {
    const entries = Array.isArray(providers) ? providers.map((p) => [p, true]) : Object.entries(providers);
    for (const [name, info] of entries) {
      const li = document.createElement("li");
      const has = typeof info === "object" ? info.has_key ?? info.key ?? info.configured : info;
      const from = typeof info === "object" && has && info.key_from ? ` (from ${info.key_from})` : "";
      li.textContent = `${name}: ${has ? "key set" : "no key"}${from}`;
      list.append(li);
    }
    setText($("providers-note"), "");
  } else {
    setText($("providers-note"), `This host (version ${hello.version}) does not report its providers yet. `
      + "In a terminal, `hybrid-engine keys list` shows which providers have a key, and "
      + "`hybrid-engine keys set openai` adds one.");
  }
  renderSettingsProblems(summary);
  $("key-form").hidden = !types.includes("keys.set");
  if (types.includes("settings.update") && summary?.budgets) renderHostSettings(summary);
  if (types.includes("spend.daily")) loadSpend();
  if (types.includes("doctor")) {
    $("run-doctor").hidden = false;
    setText($("doctor-note"), "Checks the host's registration for every browser and names the fix for each problem.");
  } else {
    $("run-doctor").hidden = true;
    setText($("doctor-note"), "This host does not run its diagnosis from the browser yet. In a terminal, "
      + "`hybrid-engine doctor` checks every browser's registration and prints the fix for each finding.");
  }
}

// A bad config.toml or keys.json (named with the key and the allowed range), and a keys.json
// others can read: shown under the providers, where the user looks when nothing runs.
function renderSettingsProblems(summary) {
  let box = $("settings-problems");
  if (!box) {
    box = document.createElement("p");
    box.id = "settings-problems";
    box.className = "error-text";
    box.setAttribute("role", "alert");
    $("providers-note").after(box);
  }
  const problems = [...(summary?.errors || []), ...(summary?.warnings || [])];
  box.hidden = !problems.length;
  box.textContent = "";
  problems.forEach((text, i) => {
    if (i) box.append(document.createElement("br"));
    box.append(text);
  });
}

function showFieldError(input, box, message) {
  input.setAttribute("aria-invalid", message ? "true" : "false");
  box.hidden = !message;
  box.textContent = message;
}

function renderProviders(providers) {
  const list = $("providers");
  list.textContent = "";
  for (const [name, info] of Object.entries(providers)) {
    const li = document.createElement("li");
    const has = info.key ?? info.has_key;
    li.textContent = `${name}: ${has ? "key set" : "no key"}${has && info.key_from ? ` (from ${info.key_from})` : ""}`;
    list.append(li);
  }
}

function keyStatus(text, kind) {
  $("key-status").textContent = text;
  $("key-status").dataset.kind = kind;
}

async function saveKey() {
  const input = $("key-input");
  const provider = $("key-provider").value;
  const key = input.value;
  input.value = ""; // the page keeps no copy, whatever the answer
  if (!key.trim()) {
    keyStatus("Paste the provider's API key first.", "error");
    return;
  }
  keyStatus("Saving…", "busy");
  try {
    const r = await call("keys.set", { provider, key });
    renderProviders(r.providers);
    const source = r.providers[provider];
    keyStatus(source.source === "keys_file" ? `Key for ${provider} stored by the host in ${r.stored_in}.`
      : `Stored in ${r.stored_in}, but ${source.key_from} is used first.`, "ok");
  } catch (err) {
    keyStatus(`Not saved: ${err.message}`, "error");
  }
}

async function removeKey() {
  const provider = $("key-provider").value;
  try {
    const r = await call("keys.remove", { provider });
    renderProviders(r.providers);
    keyStatus(r.removed ? `Stored key for ${provider} removed.` : `No stored key for ${provider}.`, "ok");
  } catch (err) {
    keyStatus(`Not removed: ${err.message}`, "error");
  }
}

function renderHostSettings(summary) {
  $("host-settings").hidden = false;
  $("config-file").textContent = summary.config_file || "config.toml";
  const box = $("base-urls");
  if (!box.childElementCount) {
    for (const name of PROVIDERS) {
      const row = document.createElement("div");
      row.className = "field-row";
      const label = document.createElement("label");
      label.htmlFor = `set-providers-${name}-base_url`;
      label.textContent = `${name} base URL`;
      const input = document.createElement("input");
      Object.assign(input, { type: "text", id: label.htmlFor, spellcheck: false, placeholder: "the provider's default" });
      input.dataset.section = `providers.${name}`;
      input.dataset.key = "base_url";
      const error = document.createElement("p");
      error.className = "error-text field-error";
      error.setAttribute("role", "alert");
      error.hidden = true;
      row.append(label, input, error);
      box.append(row);
      input.addEventListener("change", () => saveHostSetting(input));
    }
  }
  const values = {
    "budgets.daily_usd": summary.budgets.daily_usd, "budgets.monthly_usd": summary.budgets.monthly_usd,
    "notes.folder": summary.notes_folder,
  };
  for (const name of PROVIDERS) values[`providers.${name}.base_url`] = summary.providers?.[name]?.base_url;
  for (const input of document.querySelectorAll("#host-settings input[data-key]")) {
    if (input.getAttribute("aria-invalid") === "true") continue; // keep what the user is fixing
    const value = values[`${input.dataset.section}.${input.dataset.key}`];
    input.value = value === null || value === undefined ? "" : String(value);
  }
}

// One setting to the host, which checks it by the same rules as config.toml and says what is
// wrong next to the field; the field keeps the typed text until it is fixed.
async function saveHostSetting(input) {
  const box = input.parentElement.querySelector(".field-error");
  const text = input.value.trim();
  let value = text === "" ? null : text;
  if (value !== null && input.dataset.number && text !== "" && Number.isFinite(Number(text))) value = Number(text);
  const saved = $("settings-saved");
  saved.textContent = "";
  try {
    await call("settings.update", { section: input.dataset.section, key: input.dataset.key, value });
  } catch (err) {
    // The card names config.toml already: the key, the allowed range and what was typed remain.
    showFieldError(input, box, err.message.replace(/^.*config\.toml: /s, ""));
    saved.dataset.kind = "error";
    saved.textContent = "Not saved.";
    return;
  }
  showFieldError(input, box, "");
  saved.dataset.kind = "ok";
  saved.textContent = value === null ? "Removed; the default applies." : "Saved to config.toml.";
  if (input.dataset.section === "budgets") loadSpend();
}

async function loadSpend() {
  try {
    spendDays = (await call("spend.daily", { days: 30 })).days;
  } catch (err) {
    $("spend-card").hidden = false;
    $("spend-note").textContent = `Spend unavailable: ${err.message}`;
    return;
  }
  $("spend-card").hidden = false;
  renderSpend();
}

// The chart's SVG scales with the page: its labels are sized in screen pixels, so a narrow
// window does not shrink them below reading size.
function scaleChartText() {
  const svg = $("spend-chart").querySelector("svg");
  const width = svg?.getBoundingClientRect().width;
  if (width) svg.style.setProperty("--chart-scale", String(Number(svg.viewBox.baseVal.width) / width));
}
new ResizeObserver(scaleChartText).observe($("spend-chart"));

function renderSpend() {
  if (!spendDays) return;
  const by = document.querySelector('input[name="spend-by"]:checked')?.value || "by_provider";
  const { bars } = spendBars(spendDays, by);
  drawSpend($("spend-chart"), spendDays, by);
  // Thirty empty days are a tall blank box with an axis: the sentence below says it alone.
  $("spend-chart").hidden = !bars.length;
  scaleChartText();
  const total = spendDays.reduce((sum, d) => sum + (d.total || 0), 0);
  const estimated = spendDays.reduce((sum, d) => sum + (d.estimated || 0), 0);
  const unpriced = spendDays.reduce((sum, d) => sum + (d.unpriced_steps || 0), 0);
  const parts = [bars.length ? `${usd(total)} over ${spendDays.length} days.` : `Nothing spent in ${spendDays.length} days.`];
  if (estimated > 0) parts.push(`${usd(estimated)} of it estimated from our own token count.`);
  if (unpriced > 0) parts.push(`${unpriced} step(s) used a model whose price is unknown (not counted).`);
  $("spend-note").textContent = parts.join(" ");
}

async function runDoctor() {
  $("doctor-output").textContent = "Running…";
  try {
    const r = await call("doctor");
    const findings = Array.isArray(r.findings) ? r.findings : [];
    $("doctor-output").textContent = findings.length
      ? findings.map((f) => `${f.severity.toUpperCase()}${f.browser ? ` (${f.browser})` : ""}: ${f.problem}\n  Fix: ${f.fix}`).join("\n\n")
      : "No problems found.";
  } catch (err) {
    $("doctor-output").textContent = `Doctor failed: ${err.message}`;
  }
}

// The "already sent" mark on page load needs each tab's address: the `tabs` permission, asked
// for here, at the click (the browser only asks during one), and given back when unticked.
const TABS = { permissions: ["tabs"] };

function wireSentBadge() {
  const box = $("sent-badge");
  if (!api.permissions) {
    box.disabled = true;
    return;
  }
  api.permissions.contains(TABS).then((on) => { box.checked = on; }, () => {});
  box.addEventListener("change", async () => {
    try {
      box.checked = box.checked ? await api.permissions.request(TABS) : !(await api.permissions.remove(TABS));
    } catch (err) {
      box.checked = await api.permissions.contains(TABS).catch(() => false);
      $("saved").textContent = `Not changed: ${err.message}`;
    }
  });
}

async function start() {
  $("default-workflow").addEventListener("change", (e) => save({ defaultTemplate: e.target.value }));
  $("notifications").addEventListener("change", (e) => save({ notifications: e.target.checked }));
  wireSentBadge();
  $("max-mb").addEventListener("change", (e) => {
    // Refused in place, never clamped behind the user's back: the field keeps what they typed.
    const text = e.target.value.trim();
    const mb = Number(text);
    const ok = text !== "" && Number.isInteger(mb) && mb >= 1 && mb <= MAX_MB;
    showFieldError(e.target, $("max-mb-error"), ok ? "" : `Enter a whole number of MB from 1 to ${MAX_MB}; not saved.`);
    if (!ok) {
      $("saved").textContent = "";
      return;
    }
    save({ maxCaptureBytes: mb * 1024 * 1024 });
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    saveKey();
  });
  $("key-remove").addEventListener("click", removeKey);
  for (const input of document.querySelectorAll("#host-settings input[data-key]")) {
    input.addEventListener("change", () => saveHostSetting(input));
  }
  for (const radio of document.querySelectorAll('input[name="spend-by"]')) {
    radio.addEventListener("change", () => renderSpend());
  }
  $("run-doctor").addEventListener("click", runDoctor);
  try {
    const commands = await api.commands.getAll();
    const cmd = commands.find((c) => c.name === "send-page");
    $("shortcut-note").textContent = cmd?.shortcut
      ? `Shortcut: ${cmd.shortcut} sends the page to this workflow.`
      : "No keyboard shortcut is set; set one in the browser's extension shortcuts page.";
  } catch {
    // commands.getAll is optional information
  }
  const port = api.runtime.connect({ name: "popup" });
  let detailed = false;
  port.onMessage.addListener((msg) => {
    if (msg.type !== "state") return;
    renderState(msg.state);
    if (msg.state.connection.status === "connected" && !detailed) {
      detailed = true;
      renderHostDetails();
    } else if (!detailed && !hello) {
      renderHostDetails();
    }
  });
}

start();
