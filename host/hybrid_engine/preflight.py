"""Before Send: will each model step of an estimated run be able to start?

Per model step of an estimate (estimate.py), `preflight` says whether its provider has a
key (or, for the local provider, whether something answers at its address), and whether
the estimate's upper bound keeps the run within its run budget and today's spend within
the daily budget; `fix` is the one thing to do when not. Nothing is sent to a provider:
the local check is a TCP connect with a short timeout, cached briefly so that switching
workflows in the popup does not knock again and again.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

from . import money

LOCAL_CHECK_TIMEOUT_S = 0.3
LOCAL_CHECK_TTL_S = 5.0

_answers: dict[str, tuple[float, bool]] = {}  # base URL -> (checked at, answering)

_KEY_NAMES = {"openai": "OpenAI", "deepseek": "DeepSeek", "gemini": "Gemini"}


_knocking: dict[str, threading.Event] = {}  # base URL -> set when the check on a thread is done
_knocking_lock = threading.Lock()


def check_soon(base_url: str | None) -> None:
    """Start the local check on a thread of its own: the estimate extracts the page meanwhile,
    so a server that does not answer (the whole LOCAL_CHECK_TIMEOUT_S) is not waited for after it."""
    if not base_url:
        return
    with _knocking_lock:
        hit = _answers.get(base_url)
        if (hit is not None and time.monotonic() - hit[0] < LOCAL_CHECK_TTL_S) or base_url in _knocking:
            return
        done = _knocking[base_url] = threading.Event()

    def knock() -> None:
        try:
            _knock(base_url, time.monotonic())
        finally:
            with _knocking_lock:
                _knocking.pop(base_url, None)
            done.set()
    threading.Thread(target=knock, name="preflight", daemon=True).start()


def local_answering(base_url: str | None, *, now: float | None = None) -> bool:
    """Whether something accepts a connection at `base_url`'s host and port (cached briefly)."""
    if not base_url:
        return False
    with _knocking_lock:
        pending = _knocking.get(base_url)
    if pending is not None:
        pending.wait(LOCAL_CHECK_TIMEOUT_S + 1.0)
    now = time.monotonic() if now is None else now
    hit = _answers.get(base_url)
    if hit is not None and now - hit[0] < LOCAL_CHECK_TTL_S:
        return hit[1]
    return _knock(base_url, now)


def _knock(base_url: str, now: float) -> bool:
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=LOCAL_CHECK_TIMEOUT_S):
            answering = True
    except (OSError, ValueError):
        answering = False
    _answers[base_url] = (now, answering)
    return answering


def annotate(estimate: dict, *, spent_today: float, daily_budget: float | None, provider_settings) -> dict:
    """`estimate` with `preflight` on each step and a top-level `preflight_ok`.

    provider_settings(name) gives the provider's settings (settings.provider_settings);
    spent_today is what the daily budget already counts (spend plus unconfirmed calls).
    """
    run_budget = estimate.get("budget_usd")
    running = 0.0  # upper bound of this run's cost up to and including the step
    all_ok = True
    for step in estimate.get("steps", []):
        running += float(step.get("cost_max") or 0.0)
        provider = step.get("provider")
        check: dict = {"key_present": None, "local_server": None, "within_run_budget": True,
                       "within_daily_budget": True, "fix": None}
        fixes: list[str] = []
        # A step the run would fail at or not send (a scanned PDF upstream, a text too long to
        # map and reduce, a local_only page) cannot start either, whatever its key: it says why.
        # An entry that is a lower bound only says what the estimate cannot know (a list made
        # by a model): not a reason to stop.
        problem = step.get("blocked") or (None if step.get("lower_bound") else step.get("error"))
        if not problem and step.get("fits") is False and step.get("on_overflow", "fail") == "fail":
            problem = step.get("warning")  # over the model's window: it fails before it is sent
        if problem:
            fixes.append(problem[:1].upper() + problem[1:].rstrip(".") + ".")
        try:
            conf = provider_settings(provider)
        except KeyError:
            conf = None
        if provider == "local":
            answering = local_answering(conf.base_url if conf else None)
            check["local_server"] = "answering" if answering else "not answering"
            if not answering:
                where = conf.base_url if conf else "its address"
                fixes.append(f"Nothing answers at {where}: start the local model server (for Ollama: "
                             "`ollama serve`), or set its address in Settings.")
        elif conf is not None:
            check["key_present"] = bool(conf.api_key)
            if not conf.api_key:
                fixes.append(f"No {_KEY_NAMES.get(provider, provider)} key: add it in Settings.")
        if run_budget is not None and running > run_budget + 1e-12:
            check["within_run_budget"] = False
            fixes.append(f"This run may cost up to {money.usd(running)} by this step, over its "
                         f"{money.usd_budget(run_budget)} run budget: the run would stop here. Raise the "
                         "template's budget_usd or choose a cheaper workflow.")
        if daily_budget is not None and spent_today + running > daily_budget + 1e-12:
            check["within_daily_budget"] = False
            fixes.append(f"Today's {money.usd(spent_today)} plus up to {money.usd(running)} would pass the "
                         f"{money.usd_budget(daily_budget)} daily budget: raise it in Settings, or wait "
                         "until tomorrow.")
        check["fix"] = " ".join(fixes) or None
        check["ok"] = not fixes
        all_ok = all_ok and check["ok"]
        step["preflight"] = check
    estimate["preflight_ok"] = all_ok
    estimate["spent_today"] = round(spent_today, 10)
    estimate["daily_budget_usd"] = daily_budget
    return estimate


__all__ = ["LOCAL_CHECK_TIMEOUT_S", "LOCAL_CHECK_TTL_S", "annotate", "check_soon", "local_answering"]
