"""docs/PROTOCOL.md is the reference the extension is written against: it names every
message type the host handles, every event it sends and every code its replies carry."""

from __future__ import annotations

import re
from pathlib import Path

from hybrid_engine import errors, protocol
from hybrid_engine.host import HANDLERS
from hybrid_engine.hello import EVENTS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")


def _first_cells(heading: str) -> set[str]:
    """The backticked names in the first column of the table under `heading`."""
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    return {name for cell in re.findall(r"^\| ([^|]+) \|", section, re.M) for name in re.findall(r"`([^`]+)`", cell)}


def _reply_codes() -> set[str]:
    found = {"bad_config", "unknown_type", "internal"}  # spelled where host.py builds the reply
    for module in (errors, protocol):
        found |= {obj.code for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, errors.HybridEngineError)}
    return found


def test_every_message_type_the_host_handles_is_documented():
    assert set(HANDLERS) <= _first_cells("## Message types")


def test_every_event_the_host_sends_is_documented():
    assert set(EVENTS) <= _first_cells("## Events")


def test_every_code_a_reply_can_carry_is_documented():
    assert _reply_codes() <= _first_cells("## Error codes in replies")
