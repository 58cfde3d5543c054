// What a running run shows instead of "0 tok · $0": how long it has been going and what the
// model step now running is expected to cost. The range comes from the estimate shown when
// the run was sent (this popup sent it), else from the call journal's upper bound for the
// call in flight; the final figure replaces it when the run ends.

import { duration, usd } from "../lib/format.js";
import { StepStatus } from "../lib/states.js";

function elapsed(iso, now = Date.now()) {
  const t = Date.parse(iso || "");
  if (!Number.isFinite(t)) return "";
  const s = Math.max(0, Math.floor((now - t) / 1000));
  return s < 60 ? `${s} s` : duration(s);
}

function range(lo, hi) {
  if (hi === null || hi === undefined) return null;
  // No-break spaces: a narrow popup wraps between facts, never inside a range.
  if (lo === null || lo === undefined || usd(lo) === usd(hi)) return `up to\u00a0${usd(hi)}`;
  return `${usd(lo)}\u00a0–\u00a0${usd(hi)}`;
}

// The running model step's expected cost, as text, or null when nothing is known.
function runningCost(run, estimate) {
  const running = (run.steps || []).filter((s) => s.status === StepStatus.RUNNING);
  for (const s of running) {
    const est = (estimate?.steps || []).find((e) => e.step_id === s.id);
    const name = s.name || s.id;
    if (est && !est.price_unknown) return `${name}: expected ${range(est.cost_min, est.cost_max)}`;
    const call = (s.calls || []).filter((c) => c.state === "sent").at(-1);
    if (call && call.cost_max !== null && call.cost_max !== undefined) return `${name}: ${range(null, call.cost_max)}`;
    if (call || est) return `${name}: price unknown`;
  }
  return null;
}

// "Running 12 s · summary: expected $0.0004 – $0.0019"
export function liveLine(run, estimate, now = Date.now()) {
  const parts = [`Running ${elapsed(run.createdAt, now)}`.trim()];
  const cost = runningCost(run, estimate);
  if (cost) parts.push(cost);
  const spent = Number(run.metrics?.total_cost || 0);
  if (spent > 0) parts.push(`spent so far ${usd(spent)}`);
  return parts.join(" · ");
}

// A list row's facts while its run is going: elapsed time and, when this popup sent it, the
// estimate's range for the whole run.
export function liveRowFacts(run, estimate, now = Date.now()) {
  const parts = [elapsed(run.createdAt, now)];
  if (estimate && !(estimate.price_unknown && estimate.unknown_cost_steps >= (estimate.steps || []).length)) {
    parts.push(`≈ ${range(estimate.total_cost_min, estimate.total_cost_max)}`);
  }
  return parts.filter(Boolean).join(" · ");
}
