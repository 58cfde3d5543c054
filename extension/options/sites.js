// Options, Sites: the [[sites]] rules of config.toml, shown and edited. The host writes the
// file (`sites.set`, through the background); the suggestions are offered, never applied
// until added. A section of its own, started by options.html.

import { api } from "../lib/ext.js";
import { RULES } from "../lib/sites.js";

const $ = (id) => document.getElementById(id);
const RULE_TEXT = {
  never: "never: not captured or sent",
  local_only: "local only: local models only",
  strip_query: "strip query: URL stored without ?query and #fragment",
};
let rules = [];

async function call(type, fields = {}) {
  const reply = await api.runtime.sendMessage({ type, ...fields });
  if (!reply?.ok) throw Object.assign(new Error(reply?.error?.message || "failed"), { code: reply?.error?.code });
  return reply.result;
}

function say(text, bad = false) {
  const note = $("sites-status");
  note.textContent = text;
  note.classList.toggle("error-text", bad);
}

function renderRules() {
  const list = $("sites-rules");
  list.textContent = "";
  $("sites-empty").hidden = rules.length > 0;
  rules.forEach((r, i) => {
    const li = document.createElement("li");
    li.dataset.match = r.match;
    li.dataset.rule = r.rule;
    const code = document.createElement("code");
    code.textContent = r.match;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove the rule for ${r.match}`);
    remove.addEventListener("click", () => save(rules.filter((_, j) => j !== i)));
    li.append(code, ` ${RULE_TEXT[r.rule] || r.rule} `, remove);
    list.append(li);
  });
}

function renderDefaults(defaults) {
  const list = $("sites-defaults");
  list.textContent = "";
  for (const d of defaults || []) {
    const li = document.createElement("li");
    const add = document.createElement("button");
    add.type = "button";
    add.className = "small";
    add.textContent = "Add";
    add.setAttribute("aria-label", `Add ${d.match} as ${d.rule}`);
    add.disabled = rules.some((r) => r.match === d.match);
    add.addEventListener("click", () => save([...rules, { match: d.match, rule: d.rule }]));
    const code = document.createElement("code");
    code.textContent = d.match;
    li.append(code, ` ${d.rule} (${d.why}) `, add);
    list.append(li);
  }
}

let defaults = [];

async function save(next) {
  try {
    const reply = await call("sites.set", { sites: next });
    rules = reply.sites || [];
    say("Saved to config.toml.");
  } catch (err) {
    say(`Not saved: ${err.message}`, true);
    return;
  }
  renderRules();
  renderDefaults(defaults);
}

async function load() {
  try {
    const config = await call("config");
    const sites = config.sites || {};
    rules = sites.rules || [];
    defaults = sites.defaults || [];
    if (sites.error) say(sites.error, true);
    $("sites-file").textContent = config.config_file || "config.toml";
  } catch (err) {
    say(`The rules cannot be read now: ${err.message}`, true);
  }
  renderRules();
  renderDefaults(defaults);
}

for (const rule of RULES) $("sites-rule").append(new Option(RULE_TEXT[rule].split(":")[0], rule));

$("sites-add").addEventListener("submit", (event) => {
  event.preventDefault();
  const match = $("sites-match").value.trim();
  if (!match) return;
  save([...rules, { match, rule: $("sites-rule").value }]).then(() => {
    if (!$("sites-status").classList.contains("error-text")) $("sites-match").value = "";
  });
});

load();
