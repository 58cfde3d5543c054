"""Messages of the options page: provider keys, settings written to config.toml, spend per day.

A key goes one way only: `keys.set` stores it in the host's key file (as `hybrid-engine
keys set` does) and no reply, log line or error message ever carries it back; `keys.status`
says whether a provider has a key and where it comes from. `settings.update` changes one
line of config.toml through configedit (checked by settings.py before it is written).
"""

from __future__ import annotations

from .config import PROVIDERS
from .errors import BadRequest
from .msgfields import field, json_type

MAX_KEY_CHARS = 4096


def _provider(msg: dict) -> str:
    name = field(msg, "provider", str, f"one of {', '.join(PROVIDERS)}")
    if name not in PROVIDERS:
        raise BadRequest(f"provider: expected one of {', '.join(PROVIDERS)}, got {name[:40]!r}", field="provider")
    return name


def keys_status() -> dict:
    """Per provider: whether a key is set, where it comes from (never the key), the base URL."""
    from . import config, settings
    from .redact import public_url

    providers, errors = {}, []
    try:
        conf = config.load_config()
    except config.ConfigError as exc:
        conf, errors = {}, [str(exc)]
    for name in PROVIDERS:
        try:
            s = settings.provider_settings(name, conf)
        except config.ConfigError as exc:  # a broken keys.json or table: say so, show the rest
            if str(exc) not in errors:
                errors.append(str(exc))
            s = settings.provider_settings(name, {}, keys_file=False)
        source = s.api_key_source or ""
        providers[name] = {
            "key": bool(s.api_key),
            "source": "env" if source.startswith("env:") else {"keys": "keys_file", "config": "config"}.get(source),
            "key_from": s.key_source_label,
            "key_env": s.key_env,
            "base_url": public_url(s.base_url),
        }
    warning = config.keys_file_warning()
    return {"providers": providers, "errors": errors, "warnings": [warning] if warning else [],
            "keys_file": str(config.keys_path())}


def h_keys_status(host, msg: dict) -> dict:
    return keys_status()


def h_keys_set(host, msg: dict) -> dict:
    from . import config

    provider = _provider(msg)
    key = msg.get("key")
    if not isinstance(key, str):
        raise BadRequest(f"key: expected a string, got {json_type(key)}", field="key")
    key = key.strip()
    # The key itself never appears in a message: only what is wrong with it.
    problem = config.key_problem(key, MAX_KEY_CHARS)
    if problem:
        raise BadRequest(f"key: {problem}", field="key")
    config.set_key(provider, key)
    status = keys_status()
    return {"provider": provider, "stored_in": str(config.keys_path()), **status}


def h_keys_remove(host, msg: dict) -> dict:
    from . import config

    provider = _provider(msg)
    removed = config.remove_key(provider)
    return {"provider": provider, "removed": removed, **keys_status()}


def h_settings_update(host, msg: dict) -> dict:
    from . import configedit

    section = field(msg, "section", str, "a string such as 'budgets' or 'providers.openai'")
    key = field(msg, "key", str, "a string such as 'daily_usd'")
    if "value" not in msg:
        raise BadRequest("value: missing (expected a string, a number, or null to remove the setting)", field="value")
    value = msg["value"]
    if isinstance(value, (dict, list)):
        raise BadRequest(f"value: expected a string, a number, or null, got {json_type(value)}", field="value")
    return configedit.update(section, key, value)


def h_spend_daily(host, msg: dict) -> dict:
    from .spending import MAX_DAYS, daily_spend

    days = field(msg, "days", int, f"a whole number of days from 1 to {MAX_DAYS}", required=False, default=30)
    if not 1 <= days <= MAX_DAYS:
        raise BadRequest(f"days: expected a whole number of days from 1 to {MAX_DAYS}, got {days}", field="days")
    return {"days": daily_spend(host.service.store, days)}


__all__ = ["h_keys_remove", "h_keys_set", "h_keys_status", "h_settings_update", "h_spend_daily", "keys_status"]
