"""The configuration as the extension's options page shows it: never a key, and never
hidden by one bad file (what cannot be read is named in `errors`, the rest still shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import config


def config_summary(*, templates_folder: Path, database: Path) -> dict:
    """What is configured, for the extension's options page.

    Per provider: whether it has a key and where the key comes from, as a label only
    (`env`, `keys_file`, `config`; never the key or any part of it) with `key_from` naming
    the variable or the file, the base URL (credentials in it removed), concurrency,
    timeout and pacing (`rate`: tier, requests and tokens per minute). Then budgets, executor limits and where things live. A bad config.toml or
    keys.json does not hide the rest: what cannot be read is named in `errors`.
    """
    from . import settings
    from .redact import public_url

    errors: list[str] = []
    try:
        conf = config.load_config()
    except config.ConfigError as exc:
        conf, errors = {}, [str(exc)]
    try:
        settings.load(conf)
    except config.ConfigError as exc:
        errors.append(str(exc))
    providers = {}
    for name in config.PROVIDERS:
        try:
            s = settings.provider_settings(name, conf)
        except config.ConfigError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
            try:  # show the rest: without keys.json, then without config.toml's table too
                s = settings.provider_settings(name, conf, keys_file=False)
            except config.ConfigError:
                s = settings.provider_settings(name, {}, keys_file=False)
        source = s.api_key_source or ""
        from_env = source.startswith("env:")
        providers[name] = {
            "has_key": bool(s.api_key),
            "key_source": "env" if from_env else {"keys": "keys_file", "config": "config"}.get(source),
            "key_env": source[4:] if from_env else s.key_env,
            "key_from": s.key_source_label,
            "base_url": public_url(s.base_url),
            "concurrency": s.concurrency,
            "timeout_s": s.timeout_s,
            "rate": _rate(name, conf),
        }
    budgets: dict[str, Any] = {"daily_usd": None, "monthly_usd": None, "unknown_price": None}
    try:
        b = settings.budgets(conf)
        budgets.update(daily_usd=b.daily_usd, monthly_usd=b.monthly_usd, unknown_price=b.unknown_price)
    except config.ConfigError as exc:  # show the rest; say what is wrong with [budgets]
        budgets["error"] = str(exc)
    try:
        ex = settings.executor(conf)
        limits: dict[str, Any] = {"concurrency": ex.concurrency, "per_action": dict(ex.action_concurrency)}
    except config.ConfigError as exc:
        limits = {"concurrency": None, "per_action": {}, "error": str(exc)}
    limits["per_provider"] = {n: p["concurrency"] for n, p in providers.items() if p["concurrency"]}
    try:
        notes_folder = settings.notes(conf).folder
    except config.ConfigError as exc:
        notes_folder = None
        if str(exc) not in errors:
            errors.append(str(exc))
    from .sites import DEFAULTS

    sites: dict[str, Any] = {"rules": [], "defaults": [{"match": m, "rule": r, "why": w} for m, r, w in DEFAULTS]}
    try:
        sites["rules"] = [{"match": s.match, "rule": s.rule} for s in settings.sites(conf)]
    except config.ConfigError as exc:
        sites["error"] = str(exc)
    warning = config.keys_file_warning()
    return {
        "providers": providers,
        "budgets": budgets,
        "limits": limits,
        "sites": sites,
        "errors": errors,
        "warnings": [warning] if warning else [],
        "templates_folder": str(templates_folder),
        "notes_folder": notes_folder,
        "data_folder": str(config.data_dir()),
        "database": str(database),
        "log_file": str(config.logs_dir() / "hybrid-engine.log"),
        "config_file": str(config.config_path()),
        "config_file_exists": config.config_path().is_file(),
        "keys_file": str(config.keys_path()),
    }


def _rate(name: str, conf: dict) -> dict:
    """The requests and tokens per minute the executor paces this provider to (None: none)."""
    from . import settings

    try:
        table = settings.provider(name, conf)
    except config.ConfigError:
        table = settings.ProviderConfig()
    rate = table.rate(name)
    return {"tier": table.tier, "rpm": rate.rpm, "tpm": rate.tpm}
