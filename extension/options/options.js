// Settings, and what the host says about itself. Renders and sends intents to the
// background, like the popup; never talks to the host directly.

import { api } from "../lib/ext.js";

const $ = (id) => document.getElementById(id);
let settings = {};
let hello = null;

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
  select.append(new Option("First workflow in the list", ""));
  for (const n of names) select.append(new Option(n, n));
  if (settings.defaultTemplate && !names.includes(settings.defaultTemplate)) {
    select.append(new Option(`${settings.defaultTemplate} (not listed by the host)`, settings.defaultTemplate));
  }
  select.value = settings.defaultTemplate || "";
  $("notifications").checked = !!settings.notifications;
  $("max-mb").value = String(Math.round((settings.maxCaptureBytes || 8 * 1024 * 1024) / (1024 * 1024)));
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

async function start() {
  $("default-workflow").addEventListener("change", (e) => save({ defaultTemplate: e.target.value }));
  $("notifications").addEventListener("change", (e) => save({ notifications: e.target.checked }));
  $("max-mb").addEventListener("change", (e) => {
    const mb = Math.min(60, Math.max(1, Number(e.target.value) || 8));
    save({ maxCaptureBytes: mb * 1024 * 1024 });
  });
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
