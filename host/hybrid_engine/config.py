"""Where things live and what the user configured.

Everything sits under one folder when HYBRID_ENGINE_HOME is set (tests, portable
installs); otherwise platformdirs' per-user data and config folders. The browser
starts the host without the user's shell environment, so keys are also kept in a
user-only file written by `hybrid-engine keys set`; the environment wins when present.
"""

from __future__ import annotations

import json
import os
from collections import namedtuple
from pathlib import Path

APP_NAME = "hybrid-engine"

PROVIDERS = ("openai", "deepseek", "gemini", "local")

_ENV = {
    "openai": (("OPENAI_API_KEY",), "OPENAI_BASE_URL", None),
    "deepseek": (("DEEPSEEK_API_KEY",), "DEEPSEEK_BASE_URL", "https://api.deepseek.com"),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL", None),
    "local": (("HYBRID_ENGINE_LOCAL_API_KEY",), "HYBRID_ENGINE_LOCAL_BASE_URL", "http://localhost:11434/v1"),
}


def home_override() -> Path | None:
    value = os.environ.get("HYBRID_ENGINE_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    override = home_override()
    if override:
        return override
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    override = home_override()
    if override:
        return override
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def db_path() -> Path:
    return data_dir() / "engine.db"


def config_path() -> Path:
    return config_dir() / "config.toml"


def templates_dir() -> Path:
    return config_dir() / "templates"


def logs_dir() -> Path:
    return data_dir() / "logs"


def keys_path() -> Path:
    return config_dir() / "keys.json"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class ConfigError(ValueError):
    """config.toml could not be read; the message names the file and the problem."""


def load_config() -> dict:
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    import tomllib  # here, not at the top: the host's runs.list never reads config.toml

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def section(name: str, config: dict | None = None) -> dict:
    config = load_config() if config is None else config
    value = config.get(name, {})
    return value if isinstance(value, dict) else {}


# ---- secrets -------------------------------------------------------------

def _read_keys() -> dict:
    try:
        return json.loads(keys_path().read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _write_keys(keys: dict) -> None:
    path = keys_path()
    ensure_private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(keys, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def set_key(provider: str, key: str) -> None:
    keys = _read_keys()
    keys[provider] = key
    _write_keys(keys)


def remove_key(provider: str) -> bool:
    keys = _read_keys()
    if provider not in keys:
        return False
    del keys[provider]
    _write_keys(keys)
    return True


def stored_key_providers() -> list[str]:
    return sorted(k for k, v in _read_keys().items() if v)


class ProviderSettings(namedtuple("ProviderSettings", "provider api_key api_key_source key_env base_url "
                                                   "concurrency timeout_s")):
    """What a provider step runs with: read-only. api_key_source is "env:OPENAI_API_KEY", "keys"
    or "config", never the key; key_env is the variable named in "no key" errors. (A named
    tuple, not a dataclass: `dataclasses` costs the host's first runs.list 3 ms of imports.)"""

    __slots__ = ()

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return (f"ProviderSettings(provider={self.provider!r}, base_url={self.base_url!r}, "
                f"api_key={'set' if self.api_key else 'unset'})")


def provider_settings(provider: str, config: dict | None = None) -> ProviderSettings:
    """Read at execution time, so fixing a key and retrying a run works."""
    if provider not in _ENV:
        raise KeyError(provider)
    key_vars, base_var, default_base = _ENV[provider]
    conf = section("providers", config).get(provider, {})
    conf = conf if isinstance(conf, dict) else {}
    api_key, source = None, None
    for var in key_vars:
        if os.environ.get(var):
            api_key, source = os.environ[var], f"env:{var}"
            break
    if api_key is None:
        stored = _read_keys().get(provider)
        if stored:
            api_key, source = stored, "keys"
    if api_key is None and conf.get("api_key"):
        api_key, source = str(conf["api_key"]), "config"
    base_url = os.environ.get(base_var) or conf.get("base_url") or default_base
    concurrency = conf.get("concurrency")
    timeout_s = conf.get("timeout_s")
    return ProviderSettings(
        provider=provider,
        api_key=api_key,
        api_key_source=source,
        key_env=key_vars[0],
        base_url=base_url,
        concurrency=int(concurrency) if concurrency else None,
        timeout_s=float(timeout_s) if timeout_s else None,
    )
