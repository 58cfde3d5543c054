"""Logging to a rotating file under the data folder, never to stdout.

stdout of the host carries frames only, and the CLI's stdout carries results; so
logs go to a file, through a filter that masks every key and URL credential
(redact.py) in messages and tracebacks alike.
"""

from __future__ import annotations

import logging
import logging.handlers
import os

from . import config

_TRACEBACKS = logging.Formatter()


class RedactKeys(logging.Filter):
    """Masks secrets in the message and in the traceback (an SDK's exception text can
    carry a base URL with its password, or echo a key)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .redact import redact

        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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
