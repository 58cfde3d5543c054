"""What model steps send, as the terminal shows it: `estimate --show-prompt` and `show`."""

from __future__ import annotations


def sent_text(est: dict) -> str:
    """Each model step's provider, model and exact messages, as `estimate` would send them."""
    blocks = []
    for e in est.get("steps", ()):
        sent = e.get("sent")
        if not sent:
            continue
        where = "local" if sent.get("local") else "cloud"
        lines = [f"--- {e['step_id']}: {sent['provider']} {sent['model']} ({where})"]
        if e.get("blocked"):
            lines.append(f"blocked: {e['blocked']}")
        if sent.get("redacted"):
            lines.append(f"redacted: {counts_text(sent['redacted'])}")
        if e.get("lower_bound"):
            lines.append(f"(the answers of {', '.join(e.get('unknown_inputs', ()))} are unknown before the run: "
                         "shown empty)")
        if sent.get("system"):
            lines.append(f"system: {sent['system']}")
        lines.append("user:")
        lines.append(sent["prompt"])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def counts_text(counts: dict) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def redaction_line(doc: dict) -> str | None:
    counts = doc.get("redacted") or {}
    return f"redacted before cloud steps: {counts_text(counts)}" if counts else None


__all__ = ["sent_text", "counts_text", "redaction_line"]
