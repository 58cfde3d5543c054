"""config.toml, checked: every setting with its type and its allowed range, in one place.

Kept as one file on purpose: a reader who wants to know what a key accepts finds every rule here,
and every caller (CLI, host, worker, Options) gets the same answer from the same loader.

A bad value stops `run`, `worker` and the host's engine with one message that names the
file, the key and what is allowed, instead of hanging (a concurrency of 0 never starts a
step), killing a thread ("eight") or quietly switching a check off (a budget of nan is
never crossed, a negative price books negative spend).

    load(conf=None) -> Settings     every section checked; ConfigError lists every problem
    check(conf=None) -> Settings    load(), and keys.json too: what run, worker and the host call
    executor(conf), provider(name, conf), budgets(conf), prices(conf), models(conf)
                                    one section, for code that needs only that one

`conf` is config.toml as parsed (config.load_config()); None reads the file. Keys this
module does not know are left alone, so a newer config.toml still loads. Plain checks, no
pydantic: the host imports this on its engine path, and pydantic costs ~100 ms.
"""

from __future__ import annotations

import math
import os
import re
from collections import namedtuple
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import config as _config
from .config import PROVIDERS, ConfigError, config_path, load_config
from .ratelimit import TIER_DEFAULTS

if TYPE_CHECKING:
    from pathlib import Path

UNKNOWN_PRICE_POLICIES = ("refuse", "allow")


@dataclass(frozen=True)
class ExecutorSettings:
    concurrency: int = 16
    action_concurrency: dict[str, int] = field(default_factory=dict)
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    lease_s: float = 30.0


@dataclass(frozen=True)
class ProviderConfig:
    """[providers.NAME]: what config.toml says; provider_settings adds the environment."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    concurrency: int | None = None
    timeout_s: float | None = None
    api_version: str | None = None
    # Requests and tokens per minute (ratelimit.py); None: the tier's documented default, 0: none.
    tier: str | None = None
    rpm: float | None = None
    tpm: float | None = None

    def rate(self, name: str):
        from .ratelimit import tier_rate

        return tier_rate(name, self.tier, self.rpm, self.tpm)


@dataclass(frozen=True)
class BudgetSettings:
    daily_usd: float | None = None
    monthly_usd: float | None = None
    unknown_price: str = "refuse"


@dataclass(frozen=True)
class PriceOverride:
    """USD per million tokens; cached input defaults to the input rate."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


@dataclass(frozen=True)
class ModelOverride:
    context_window: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class WorkerSettings:
    linger_s: float = 60.0  # how long the host's background worker waits for more work


@dataclass(frozen=True)
class NotesSettings:
    """[notes]: where save_note writes when its template names no folder."""

    folder: str | None = None  # None: the data folder's notes/

    def path(self) -> "Path | None":
        from pathlib import Path

        if self.folder is None:
            return None
        folder = Path(self.folder).expanduser()
        return folder if folder.is_absolute() else _config.config_dir() / folder


@dataclass(frozen=True)
class LibrarySettings:
    keep_captures_days: int | None = None  # None: raw pages are kept as long as their runs


@dataclass(frozen=True)
class Settings:
    executor: ExecutorSettings
    providers: dict[str, ProviderConfig]
    budgets: BudgetSettings
    prices: dict[str, PriceOverride]
    models: dict[str, ModelOverride]
    worker: WorkerSettings = WorkerSettings()
    notes: NotesSettings = NotesSettings()
    webhooks: dict[str, str] = field(default_factory=dict)
    sites: tuple = ()  # sites.SiteRule, in file order
    library: LibrarySettings = LibrarySettings()


# ---- checks ----------------------------------------------------------------------------

class _Problems:
    """Problems found in one pass, so the user fixes them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, expected: str, value: Any, shown: Callable[[Any], str] | None = None) -> None:
        self.items.append(f"{where}: expected {expected}, got {(shown or _shown)(value)}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(f"{config_path()}: " + "; ".join(self.items))


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown_secret(value: Any) -> str:
    """An api_key is never repeated, whatever its type: the message reaches the log, the
    terminal, the worker's stderr file and the extension."""
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _shown(value) if isinstance(value, (dict, list)) else "a date or time"


def _shown_url(value: Any) -> str:
    """A bad base_url without its credentials: no user:password@ (with or without a scheme)
    and no query, where a key could sit."""
    if not isinstance(value, str):
        return _shown(value)
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    rest = rest.rsplit("@", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    return _shown(f"{scheme}{sep}{rest}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
            f"a whole number >= {low}")


_COUNT = _int_at_least(1)
_POSITIVE = (lambda v: _number(v) and v > 0, "a finite number of seconds > 0")
_USD = (lambda v: _number(v) and v >= 0, "a finite number of USD >= 0")
_RATE = (lambda v: _number(v) and v >= 0, "a finite number of USD per million tokens >= 0")
_PER_MINUTE = (lambda v: _number(v) and 0 <= v <= 1e9, "a number per minute from 0 (no limit) to 1e9")
_TEXT = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")


def _is_url(value: Any) -> bool:
    """http(s) with a host, a port in range and no space or control character (a pasted line
    break would otherwise fail only at the first call, far from here)."""
    from urllib.parse import urlsplit

    text = value.strip() if isinstance(value, str) else ""
    try:
        parts, _ = urlsplit(text), urlsplit(text).port  # .port raises ValueError when out of range
    except ValueError:  # a port out of range
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and \
        not any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text)


_URL = (_is_url, "an http:// or https:// URL with a host (no spaces)")


def _get(table: dict, key: str, where: str, check: tuple[Callable[[Any], bool], str],
         problems: _Problems, default: Any = None, shown: Callable[[Any], str] | None = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    ok, expected = check
    if not ok(value):
        problems.add(f"{where} {key}", expected, value, shown)
        return default
    return value


def _table(conf: dict, name: str, problems: _Problems) -> dict:
    value = conf.get(name, {})
    if not isinstance(value, dict):
        problems.add(f"[{name}]", "a table", value)
        return {}
    return value


def _conf(conf: dict | None) -> dict:
    return load_config() if conf is None else conf


# ---- sections --------------------------------------------------------------------------

def _executor(conf: dict, problems: _Problems) -> ExecutorSettings:
    ex = _table(conf, "executor", problems)
    actions: dict[str, int] = {}
    raw_actions = _get(ex, "action_concurrency", "[executor]", (lambda v: isinstance(v, dict), "a table"),
                       problems, {})
    for name, value in raw_actions.items():
        limit = _get(raw_actions, name, "[executor.action_concurrency]", _COUNT, problems)
        if limit is not None:
            actions[str(name)] = limit
    defaults = ExecutorSettings()
    base = _get(ex, "backoff_base_s", "[executor]", _POSITIVE, problems, defaults.backoff_base_s)
    cap = _get(ex, "backoff_cap_s", "[executor]", _POSITIVE, problems, defaults.backoff_cap_s)
    return ExecutorSettings(
        concurrency=_get(ex, "concurrency", "[executor]", _COUNT, problems, defaults.concurrency),
        action_concurrency=actions, backoff_base_s=float(base), backoff_cap_s=float(cap),
        lease_s=float(_get(ex, "lease_s", "[executor]", _POSITIVE, problems, defaults.lease_s)))


def _providers(conf: dict, problems: _Problems) -> dict[str, ProviderConfig]:
    table = _table(conf, "providers", problems)
    out: dict[str, ProviderConfig] = {}
    for name, value in table.items():
        where = f"[providers.{name}]"
        if name not in PROVIDERS:
            problems.add("[providers]", f"one of {', '.join(PROVIDERS)}", name)
            continue
        if not isinstance(value, dict):
            problems.add(where, "a table", value)
            continue
        timeout = _get(value, "timeout_s", where, _POSITIVE, problems)
        api_key = _get(value, "api_key", where, _TEXT, problems, shown=_shown_secret)
        base_url = _get(value, "base_url", where, _URL, problems, shown=_shown_url)
        tiers = TIER_DEFAULTS.get(name, {})
        tier = _get(value, "tier", where, (lambda v: isinstance(v, str) and v in tiers,
                                           f"one of {', '.join(tiers)}"), problems)
        rpm = _get(value, "rpm", where, _PER_MINUTE, problems)
        tpm = _get(value, "tpm", where, _PER_MINUTE, problems)
        out[name] = ProviderConfig(
            tier=tier, rpm=rpm, tpm=tpm,
            api_key=api_key.strip() if api_key else None,
            base_url=base_url.strip() if base_url else None,
            concurrency=_get(value, "concurrency", where, _COUNT, problems),
            timeout_s=float(timeout) if timeout is not None else None,
            api_version=_get(value, "api_version", where, _TEXT, problems))
    return out


def _budgets(conf: dict, problems: _Problems) -> BudgetSettings:
    table = _table(conf, "budgets", problems)
    daily = _get(table, "daily_usd", "[budgets]", _USD, problems)
    monthly = _get(table, "monthly_usd", "[budgets]", _USD, problems)
    policy = _get(table, "unknown_price", "[budgets]",
                  (lambda v: isinstance(v, str) and v.lower() in UNKNOWN_PRICE_POLICIES,
                   "'refuse' or 'allow'"), problems, "refuse")
    return BudgetSettings(float(daily) if daily is not None else None,
                          float(monthly) if monthly is not None else None, policy.lower())


def _prices(conf: dict, problems: _Problems) -> dict[str, PriceOverride]:
    table = _table(conf, "prices", problems)
    out: dict[str, PriceOverride] = {}
    for model, entry in table.items():
        where = f'[prices."{model}"]'
        if not isinstance(entry, dict):
            problems.add(where, "a table with input_per_mtok and output_per_mtok", entry)
            continue
        before = len(problems.items)
        for required in ("input_per_mtok", "output_per_mtok"):
            if required not in entry:
                problems.items.append(f"{where} {required}: missing (a finite number of USD per "
                                      "million tokens >= 0)")
        rate_in = _get(entry, "input_per_mtok", where, _RATE, problems)
        rate_out = _get(entry, "output_per_mtok", where, _RATE, problems)
        cached = _get(entry, "cached_input_per_mtok", where, _RATE, problems)
        if len(problems.items) == before:
            out[model] = PriceOverride(float(rate_in), float(rate_out),
                                       float(cached) if cached is not None else None)
    return out


def _models(conf: dict, problems: _Problems) -> dict[str, ModelOverride]:
    table = _table(conf, "models", problems)
    out: dict[str, ModelOverride] = {}
    for model, entry in table.items():
        where = f'[models."{model}"]'
        if not isinstance(entry, dict):
            problems.add(where, "a table", entry)
            continue
        out[model] = ModelOverride(
            context_window=_get(entry, "context_window", where, _COUNT, problems),
            max_output_tokens=_get(entry, "max_output_tokens", where, _COUNT, problems))
    return out


_LINGER = (lambda v: _number(v) and 0 <= v <= 86400, "a number of seconds from 0 to 86400")


def _worker(conf: dict, problems: _Problems) -> WorkerSettings:
    table = _table(conf, "worker", problems)
    return WorkerSettings(linger_s=float(_get(table, "linger_s", "[worker]", _LINGER, problems,
                                              WorkerSettings.linger_s)))


# A relative notes folder is read against config.toml's own folder (like any path in a
# config file), never against the host's working folder, which is whatever the browser chose.
_FOLDER = (lambda v: isinstance(v, str) and v.strip() != "" and "\x00" not in v,
           "a folder path (absolute, ~/, or relative to config.toml's folder)")


def _notes(conf: dict, problems: _Problems) -> NotesSettings:
    table = _table(conf, "notes", problems)
    folder = _get(table, "folder", "[notes]", _FOLDER, problems)
    return NotesSettings(folder=folder.strip() if folder else None)


_WEBHOOK_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _webhooks(conf: dict, problems: _Problems) -> dict[str, str]:
    """[webhooks] NAME = "https://...": URLs a template's webhook step may name by NAME."""
    table = _table(conf, "webhooks", problems)
    out: dict[str, str] = {}
    for name in table:
        if not _WEBHOOK_NAME.fullmatch(str(name)):
            problems.add("[webhooks]", "names of letters, digits, '-' and '_'", name)
            continue
        url = _get(table, name, "[webhooks]", _URL, problems, shown=_shown_url)
        if url is not None:
            out[name] = url.strip()
    return out


def notes(conf: dict | None = None) -> NotesSettings:
    return _one(_notes, conf)


def webhooks(conf: dict | None = None) -> dict[str, str]:
    return _one(_webhooks, conf)


def _sites(conf: dict, problems: _Problems) -> tuple:
    from .sites import RULES, PatternError, SiteRule, check_pattern

    value = conf.get("sites", [])
    if not isinstance(value, list):
        problems.add("[[sites]]", "an array of tables ([[sites]] with match and rule)", value)
        return ()
    out = []
    for n, entry in enumerate(value, 1):
        where = f"[[sites]] #{n}"
        if not isinstance(entry, dict):
            problems.add(where, "a table with match and rule", entry)
            continue
        for required in ("match", "rule"):
            if required not in entry:
                problems.items.append(f"{where} {required}: missing")
        match = _get(entry, "match", where, _TEXT, problems)
        rule = _get(entry, "rule", where, (lambda v: isinstance(v, str) and v in RULES,
                                            f"one of {', '.join(RULES)}"), problems)
        if match is not None:
            try:
                check_pattern(match)
            except PatternError as exc:
                problems.add(f"{where} match", str(exc), match)
                match = None
        if match is not None and rule is not None:
            out.append(SiteRule(match.strip(), rule))
    return tuple(out)


def sites(conf: dict | None = None) -> tuple:
    """The [[sites]] rules (sites.SiteRule), checked."""
    return _one(_sites, conf)


MAX_KEEP_DAYS = 36500
_KEEP_DAYS = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_KEEP_DAYS,
              f"a whole number of days from 1 to {MAX_KEEP_DAYS}")


def _library(conf: dict, problems: _Problems) -> LibrarySettings:
    table = _table(conf, "library", problems)
    return LibrarySettings(keep_captures_days=_get(table, "keep_captures_days", "[library]", _KEEP_DAYS, problems,
                                                   None))


def _one(reader: Callable[[dict, _Problems], Any], conf: dict | None) -> Any:
    problems = _Problems()
    value = reader(_conf(conf), problems)
    problems.raise_if_any()
    return value


def executor(conf: dict | None = None) -> ExecutorSettings:
    return _one(_executor, conf)


def providers(conf: dict | None = None) -> dict[str, ProviderConfig]:
    return _one(_providers, conf)


def provider(name: str, conf: dict | None = None) -> ProviderConfig:
    """One provider's table; a problem in another provider's table does not stop this one."""
    conf = _conf(conf)
    table = conf.get("providers", {})
    own = {name: table[name]} if isinstance(table, dict) and name in table else {}
    return _one(_providers, {"providers": own}).get(name, ProviderConfig())


def worker(conf: dict | None = None) -> WorkerSettings:
    return _one(_worker, conf)


_provider_table = provider  # provider_settings' own argument is called `provider`


def library(conf: dict | None = None) -> LibrarySettings:
    return _one(_library, conf)


def budgets(conf: dict | None = None) -> BudgetSettings:
    return _one(_budgets, conf)


def prices(conf: dict | None = None) -> dict[str, PriceOverride]:
    return _one(_prices, conf)


def models(conf: dict | None = None) -> dict[str, ModelOverride]:
    return _one(_models, conf)


def load(conf: dict | None = None) -> Settings:
    """Every section, checked; one ConfigError naming every bad key."""
    conf = _conf(conf)
    problems = _Problems()
    result = Settings(executor=_executor(conf, problems), providers=_providers(conf, problems),
                      budgets=_budgets(conf, problems), prices=_prices(conf, problems),
                      models=_models(conf, problems), worker=_worker(conf, problems),
                      notes=_notes(conf, problems), webhooks=_webhooks(conf, problems),
                      sites=_sites(conf, problems), library=_library(conf, problems))
    problems.raise_if_any()
    return result


# ---- what a provider step runs with: config.toml, keys.json and the environment ------------

class ProviderSettings(namedtuple("ProviderSettings", "provider api_key api_key_source key_env base_url "
                                                   "concurrency timeout_s")):
    """What a provider step runs with: read-only. api_key_source says where the key came from,
    never the key: "env:OPENAI_API_KEY" (the variable), "keys" (keys.json) or "config"
    (config.toml); key_env is the variable named in "no key" errors. (A named tuple, not a
    dataclass: `dataclasses` costs the host's first runs.list 3 ms of imports.)"""

    __slots__ = ()

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return (f"ProviderSettings(provider={self.provider!r}, base_url={self.base_url!r}, "
                f"api_key={'set' if self.api_key else 'unset'})")

    @property
    def key_source_label(self) -> str | None:
        """Where the key came from, for people: the variable's name, keys.json or config.toml."""
        source = self.api_key_source
        if not source:
            return None
        if source.startswith("env:"):
            return f"{source[4:]} (environment)"
        return {"keys": str(_config.keys_path()),
                "config": f"{_config.config_path()} [providers.{self.provider}]"}.get(source, source)


_warned: set[str] = set()


def provider_settings(provider: str, config: dict | None = None, *,
                      keys_file: bool = True) -> ProviderSettings:
    """Read at execution time, so fixing a key and retrying a run works.

    Only what the user gave Hybrid Engine counts: its own variables, keys.json, config.toml.
    GOOGLE_API_KEY is never read: Chromium on Debian and Ubuntu exports its own Google key
    under that name, and a browser-started host inherits it. keys_file=False leaves keys.json
    out (to show the rest when it is broken)."""
    if provider not in _config._ENV:
        raise KeyError(provider)
    key_vars, base_var, default_base = _config._ENV[provider]
    conf = _provider_table(provider, config)
    api_key, source = None, None
    for var in key_vars:
        if os.environ.get(var, "").strip():
            api_key, source = os.environ[var].strip(), f"env:{var}"
            break
    if api_key is None and keys_file:
        stored = _config._read_keys().get(provider, "").strip()
        if stored:
            api_key, source = stored, "keys"
            warning = _config.keys_file_warning()
            if warning and warning not in _warned:
                import logging

                _warned.add(warning)  # once per process, not at every step
                logging.getLogger(__name__).warning("%s", warning)
    if api_key is None and conf.api_key:
        api_key, source = conf.api_key, "config"
    base_url = os.environ.get(base_var, "").strip() or conf.base_url or default_base
    return ProviderSettings(
        provider=provider,
        api_key=api_key,
        api_key_source=source,
        key_env=key_vars[0],
        base_url=base_url,
        concurrency=conf.concurrency,
        timeout_s=conf.timeout_s,
    )


def check(conf: dict | None = None) -> Settings:
    """Everything a model step will read: config.toml (load) and, for each provider whose key
    is not in the environment, keys.json. Raises ConfigError naming the file that is bad."""
    conf = _conf(conf)
    result = load(conf)
    for name in PROVIDERS:
        provider_settings(name, conf)
    return result


__all__ = ["check", "ProviderSettings", "provider_settings", "Settings", "ExecutorSettings", "ProviderConfig", "BudgetSettings", "PriceOverride",
           "ModelOverride", "WorkerSettings", "NotesSettings", "LibrarySettings", "load", "notes", "webhooks", "executor",
           "worker", "library", "providers", "provider", "budgets", "prices", "models", "sites",
           "UNKNOWN_PRICE_POLICIES"]
