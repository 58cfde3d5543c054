"""What the host says about itself in its `hello` reply: the message types it serves, the
events it sends, its frame limits, and which heavy modules it has loaded so far.

Standard library only: hostboot.py answers the browser's first hello with it before
anything else is imported, and the full host (handlers.py) answers later ones the same way.
"""

from __future__ import annotations

import os
import sys

from . import MAX_INCOMING, MAX_OUTGOING, PROTOCOL_VERSION, __version__

# Every message type handlers.HANDLERS serves (a test keeps the two equal): hello lists them.
MESSAGE_TYPES = ("batch.add", "batch.cancel", "batch.estimate", "batch.fill", "batch.get", "batch.list",
                 "batch.pause", "batch.resume", "batch.retry_failed", "batch.start", "capture", "config", "doctor",
                 "estimate", "external_data.add", "external_data.list", "hello", "host.status", "keys.remove",
                 "keys.set", "keys.status", "library.search", "library.stats", "runs.cancel", "runs.delete",
                 "runs.for_url", "runs.get", "runs.list", "runs.output", "runs.rerun", "runs.retry",
                 "runs.subscribe", "settings.update", "sites.set", "spend", "spend.daily", "templates.list")
EVENTS = ("run.updated", "templates.changed")
HEAVY_MODULES = ("pydantic", "yaml", "openai", "google.genai", "genai_prices", "trafilatura")


def loaded_heavy_modules() -> list[str]:
    """Reported by `hello` and `host.status`, honestly: read when the reply is built."""
    return [name for name in HEAVY_MODULES if name in sys.modules]


def hello_result() -> dict:
    """What `hello` answers, from hostboot and from the full host alike."""
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "capabilities": {
            "types": list(MESSAGE_TYPES),
            "events": list(EVENTS),
            "chunking": True,
            "max_frame_out": MAX_OUTGOING,
            "max_frame_in": MAX_INCOMING,
            "config": True,
            "doctor": True,  # without the launch check (see `doctor`'s note)
            "capture_dedupe": "page.metadata.capture_id",
            "capture_reuse": ["ask", "reuse", "fresh"],
        },
        "pid": os.getpid(),
        "heavy_modules_loaded": loaded_heavy_modules(),
    }


__all__ = ["EVENTS", "HEAVY_MODULES", "MESSAGE_TYPES", "hello_result", "loaded_heavy_modules"]
