// What each model step sends, shown in the popup: before sending (from the host's estimate,
// rendered from the real capture) and in a run's detail afterwards (from the step's outputs).
// One collapsed <details> per model step: provider, model, where it goes, what was redacted,
// then the exact system and user messages. Text only (textContent), never markup.

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function countsText(counts) {
  return Object.entries(counts || {}).sort().map(([kind, n]) => `${n} ${kind}`).join(", ");
}

function stepBlock({ stepId, provider, model, local, system, prompt, redacted, blocked, cut }) {
  const box = el("details", "sent-step");
  box.dataset.stepId = stepId;
  const where = local ? "local" : "cloud";
  const summary = el("summary", "sent-summary",
                     `${stepId} → ${provider || "?"} ${model || ""} (${where}) · ${(prompt || "").length.toLocaleString("en-US")}\u00a0characters`);
  box.append(summary);
  if (blocked) box.append(el("p", "sent-blocked error-text", `Will not be sent: ${blocked}`));
  const counts = countsText(redacted);
  if (counts) box.append(el("p", "sent-redacted muted", `Redacted before sending: ${counts}`));
  if (system) {
    box.append(el("p", "sent-label muted", "System"));
    box.append(el("pre", "sent-system output", system));
  }
  box.append(el("p", "sent-label muted", "User"));
  box.append(el("pre", "sent-prompt output", prompt || ""));
  if (cut) box.append(el("p", "muted", "Cut here for the popup; `hybrid-engine show --full` has all of it."));
  return box;
}

function render(container, title, blocks) {
  container.textContent = "";
  container.hidden = !blocks.length;
  if (!blocks.length) return;
  container.append(el("p", "sent-title small-title", title));
  for (const b of blocks) container.append(stepBlock(b));
}

// Before sending: the estimate's `sent` per model step.
export function renderWillSend(container, estimate) {
  const blocks = (estimate?.steps || []).filter((s) => s.sent).map((s) => ({
    stepId: s.step_id, provider: s.sent.provider, model: s.sent.model, local: s.sent.local, system: s.sent.system,
    prompt: s.sent.prompt, redacted: s.sent.redacted, blocked: s.blocked,
  }));
  render(container, "Will be sent", blocks);
}

// After: what each model step of the run sent (its outputs.sent), with provider and model.
export function renderWasSent(container, run) {
  const blocks = (run?.steps || []).filter((s) => s.outputs && s.outputs.sent).map((s) => ({
    stepId: s.id, provider: s.metadata?.provider, model: s.metadata?.model || s.execution_metrics?.model,
    local: s.metadata?.provider === "local", system: s.outputs.sent.system, prompt: s.outputs.sent.prompt,
    redacted: s.metadata?.redacted, cut: !!s.outputs_truncated,
  }));
  render(container, "Sent", blocks);
}
