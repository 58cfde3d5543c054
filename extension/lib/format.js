// Numbers as people read them. Money follows the one written rule in
// host/hybrid_engine/money.py (the CLI's and the host's messages' too; both sides are checked
// against the same table, tests/data/money_cases.json): "unknown" with no figure, "$0" for
// exactly nothing, cents from a cent up ("$1.23"), two significant digits under a cent with
// trailing zeros dropped ("$0.00013", "$0.001"), "<$0.000001" for a positive amount smaller
// than that (a call that cost something never reads $0), "-" before a negative one.

function isFigure(cost) {
  return cost !== null && cost !== undefined && typeof cost !== "boolean" && Number.isFinite(Number(cost));
}

function trim(text) {
  return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
}

// toPrecision may answer in exponent form ("1.3e-7"): write it out in plain decimals.
function plain(n, digits) {
  const [mantissa, exp] = n.toPrecision(digits).split("e");
  if (exp === undefined) return mantissa;
  const e = Number(exp);
  const d = mantissa.replace(".", "");
  return e < 0 ? `0.${"0".repeat(-e - 1)}${d}` : mantissa;
}

export function usd(cost) {
  if (!isFigure(cost)) return "unknown";
  const n = Number(cost);
  if (n < 0) return `-${usd(-n)}`;
  if (n === 0) return "$0";
  if (n < 0.000001) return "<$0.000001";
  if (n < 0.01) {
    const small = plain(n, 2);
    if (Number(small) < 0.01) return `$${trim(small)}`;
  }
  return `$${n.toFixed(2)}`;
}

// A budget (an amount a person typed): in cents when it is whole cents, else with the digits
// it has.
export function usdBudget(amount) {
  if (!isFigure(amount) || Number(amount) === 0) return usd(amount);
  const n = Number(amount);
  if (n < 0) return `-${usdBudget(-n)}`;
  if (n < 0.000001) return usd(n);
  if (Math.abs(n * 100 - Math.round(n * 100)) < 1e-9) return `$${(Math.round(n * 100) / 100).toFixed(2)}`;
  return `$${trim(n.toFixed(6))}`;
}

// A run summary's cost: unknown when some steps have no price and nothing is known.
export function runCost(run) {
  const unknown = Number(run.unknown_cost_steps || 0);
  const cost = Number(run.total_cost || 0);
  if (unknown > 0 && !cost) return { text: "unknown", title: `${unknown} step(s) used a model whose price is unknown` };
  if (unknown > 0) {
    return { text: `${usd(cost)} + unknown`, title: `${unknown} step(s) used a model whose price is unknown` };
  }
  return { text: usd(cost), title: `total cost ${cost} USD` };
}

export function tokens(n) {
  return `${Number(n || 0).toLocaleString("en-US")} tok`;
}

export function age(iso, now = Date.now()) {
  if (!iso) return "";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

export function statusLabel(status) {
  const s = String(status || "").toUpperCase();
  return {
    PENDING: "Waiting", QUEUED: "Queued", RUNNING: "Running", COMPLETED: "Done", FAILED: "Failed",
    CANCELLED: "Cancelled", SKIPPED: "Skipped", WAITING_FOR_INPUT: "Waiting for input",
  }[s] || s.toLowerCase();
}

// A provider call that was sent but whose answer was never recorded (its worker died, its run
// was cancelled) may have been billed: say so, with the most it may have cost.
export function unconfirmedPhrase(lost, whenText = "") {
  const n = Number(lost?.calls || 0);
  if (!n) return "";
  const bound = lost.cost_max === null || lost.cost_max === undefined ? "price unknown" : `up to ${usd(lost.cost_max)}`;
  return ` · ${n} unconfirmed call${n === 1 ? "" : "s"}${whenText}, may have been billed ${bound}`;
}
