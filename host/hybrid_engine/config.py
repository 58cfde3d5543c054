"""Where things live and what the user configured.

Everything sits under one folder when HYBRID_ENGINE_HOME is set (tests, portable
installs); otherwise platformdirs' per-user data and config folders. The browser
starts the host without the user's shell environment, so keys are also kept in a
user-only file written by `hybrid-engine keys set`; the environment wins when present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomicfile import PRIVATE, write_atomically

APP_NAME = "hybrid-engine"

PROVIDERS = ("openai", "deepseek", "gemini", "local")

# Key variables, base URL variable, default base URL. Gemini's key is GEMINI_API_KEY only:
# GOOGLE_API_KEY is Chromium's own key on Debian and Ubuntu, inherited by the host.
_ENV = {
    "openai": (("OPENAI_API_KEY",), "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "deepseek": (("DEEPSEEK_API_KEY",), "DEEPSEEK_BASE_URL", "https://api.deepseek.com"),
    "gemini": (("GEMINI_API_KEY",), "GEMINI_BASE_URL", None),
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
    """One table of config.toml, unchecked: settings.py reads (and checks) the known ones."""
    config = load_config() if config is None else config
    value = config.get(name, {})
    return value if isinstance(value, dict) else {}


# ---- secrets -------------------------------------------------------------

class KeysFileError(ConfigError):
    """keys.json exists but cannot be used; the message names the file and the fix."""


def _read_keys() -> dict:
    """keys.json as {provider: key}; missing: {}. Anything else wrong with it is an error
    that names the file, never a quiet "no key": a key the user stored must not vanish."""
    path = keys_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"{path}: cannot be read ({exc}); fix its permissions or remove it "
                            "and store the keys again with `hybrid-engine keys set PROVIDER`") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeysFileError(f"{path}: not valid JSON ({exc}); fix it (it holds "
                            '{"provider": "key", ...}) or remove it and store the keys again with '
                            "`hybrid-engine keys set PROVIDER`") from None
    if not isinstance(data, dict):
        raise KeysFileError(f"{path}: expected a JSON object {{\"provider\": \"key\", ...}}, got "
                            f"{type(data).__name__}; fix it or remove it and store the keys again "
                            "with `hybrid-engine keys set PROVIDER`")
    bad = sorted(str(k) for k, v in data.items() if not isinstance(v, str))
    if bad:
        raise KeysFileError(f"{path}: the key for {', '.join(bad)} is not a string; fix it or store "
                            "it again with `hybrid-engine keys set PROVIDER`")
    return data


def keys_file_warning() -> str | None:
    """A warning when keys.json can be read by other users of this computer."""
    path = keys_path()
    if os.name != "posix":
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & 0o077:
        return (f"{path} can be read by other users (mode {mode & 0o777:o}); "
                f"run `chmod 600 {path}` (or store a key again with `hybrid-engine keys set`, "
                "which rewrites it readable by you alone)")
    return None


def _write_keys(keys: dict) -> None:
    path = keys_path()
    ensure_private_dir(path.parent)
    write_atomically(path, json.dumps(keys), PRIVATE)


def key_problem(key: str, max_chars: int = 4096) -> str | None:
    """What makes `key` not an API key, without the key itself (it must never be echoed).

    Providers' keys are printable ASCII; a space, a line break or a character that only looks
    like nothing (a zero-width space pasted from a web page) would be accepted here and fail
    at the first call as an encoding error in the Authorization header."""
    if not key:
        return "empty; paste the provider's API key"
    if len(key) > max_chars:
        return f"over {max_chars} characters; not an API key"
    for i, ch in enumerate(key, 1):
        if ch.isspace() or not " " < ch < "\x7f":
            return (f"character {i} is U+{ord(ch):04X}, which no API key has (spaces, line breaks and "
                    "invisible characters come with a paste); paste the key again")
    return None


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
