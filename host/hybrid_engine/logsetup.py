"""Logging to a rotating file under the data folder, never to stdout.

stdout of the host carries frames only, and the CLI's stdout carries results; so
logs go to a file, and a filter masks anything shaped like an API key.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re

from . import config

_KEY_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+[A-Za-z0-9._\-]{8,})")


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        redacted = _KEY_PATTERNS.sub("[redacted]", message)
        for var in ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                    "HYBRID_ENGINE_LOCAL_API_KEY"):
            value = os.environ.get(var)
            if value and len(value) >= 6:
                redacted = redacted.replace(value, "[redacted]")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_configured = False


def configure(component: str, level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    try:
        folder = config.ensure_private_dir(config.logs_dir())
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            folder / "hybrid-engine.log", maxBytes=2 * 1024 * 1024, backupCount=3, encoding="utf-8")
        try:
            os.chmod(folder / "hybrid-engine.log", 0o600)
        except OSError:
            pass
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {component}[%(process)d] %(name)s: %(message)s"))
    handler.addFilter(RedactKeys())
    root.addHandler(handler)
    logging.captureWarnings(True)
