// A run's result in a tab of its own: result.html#run=<id>&step=<id>. The text comes from the
// host through the background (never in the URL) and is drawn by the same safe Markdown
// renderer as the popup's.

import { api } from "../lib/ext.js";
import { renderMarkdown, safeHref } from "../lib/markdown.js";
import { outputText, saveMarkdown } from "../lib/result.js";

const $ = (id) => document.getElementById(id);

async function call(type, fields) {
  const reply = await api.runtime.sendMessage({ type, ...fields });
  if (!reply?.ok) throw new Error(reply?.error?.message || "no answer from the background");
  return reply.result;
}

function pageTitle(run) {
  const p = run.page || {};
  if (typeof p.title === "string" && p.title.trim()) return { title: p.title.trim(), url: p.url || null };
  const capture = (run.steps || []).find((s) => s.action === "capture" && s.outputs);
  return { title: capture?.outputs?.title || run.name, url: p.url || capture?.outputs?.source_url || null };
}

async function start() {
  const q = new URLSearchParams(location.hash.slice(1));
  const runId = q.get("run");
  const stepId = q.get("step");
  if (!runId || !stepId) {
    $("note").textContent = "No run named in this page's address.";
    return;
  }
  try {
    const [run, out] = await Promise.all([call("runs.get", { run_id: runId }),
                                          call("runs.output", { run_id: runId, step_id: stepId })]);
    const { title, url } = pageTitle(run);
    const text = outputText(out.outputs);
    document.title = `${title} · Hybrid Engine`;
    $("title").textContent = title;
    $("meta").textContent = `${run.name} · ${stepId}`;
    const href = safeHref(url);
    $("source").hidden = !url;
    if (href) $("source-link").href = href;
    $("source-link").textContent = url || "";
    $("output").append(renderMarkdown(text));
    $("note").textContent = "";
    $("note").hidden = true;
    $("copy").disabled = false;
    $("save").disabled = false;
    $("copy").addEventListener("click", async () => {
      await navigator.clipboard.writeText(text).catch(() => {});
      $("copy").textContent = "Copied";
    });
    $("save").addEventListener("click", () => saveMarkdown(text, title));
    document.body.dataset.ready = "true";
  } catch (err) {
    $("note").className = "error";
    $("note").textContent = `Could not load the result: ${err.message}`;
  }
}

start();
