// Run and step statuses as the host sends them: the names and sets of
// host/hybrid_engine/states.py (tests/unit/test_states.py holds the two together).

export const RunStatus = Object.freeze({
  PENDING: "PENDING", RUNNING: "RUNNING", COMPLETED: "COMPLETED", FAILED: "FAILED", CANCELLED: "CANCELLED",
});

export const StepStatus = Object.freeze({
  PENDING: "PENDING", QUEUED: "QUEUED", RUNNING: "RUNNING", COMPLETED: "COMPLETED", FAILED: "FAILED",
  WAITING_FOR_INPUT: "WAITING_FOR_INPUT", SKIPPED: "SKIPPED", CANCELLED: "CANCELLED",
});

// A run in one of these has ended: it changes again only through retry.
const TERMINAL_RUN = new Set([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]);

export function isTerminalRun(status) {
  return TERMINAL_RUN.has(status);
}
