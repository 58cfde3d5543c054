"""Secrets masked out of any text that leaves the process: step errors, the log, the CLI's
output and everything sent to the extension.

Masked: every key the user gave Hybrid Engine (the key variables it reads, keys.json,
`api_key` in config.toml), whatever sits in a configured base URL's user:password@ or
key-like query parameters, anything shaped like a provider key (sk-..., AIza...,
Bearer ..., Basic ...) and, in any URL or text, user:password@ and `api-key=` / `key=` / `token=` /
`access_token=` style parameters. Mask whole texts, then cut them: half a key, cut at a
length limit, can no longer be recognised.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MASK = "***"

# GOOGLE_API_KEY is never read as a key (Chromium on Debian and Ubuntu exports its own),
# but when it is in our environment it is still a secret and is masked like ours.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                   "HYBRID_ENGINE_LOCAL_API_KEY")
BASE_URL_ENV_VARS = ("OPENAI_BASE_URL", "DEEPSEEK_BASE_URL", "GEMINI_BASE_URL",
                     "HYBRID_ENGINE_LOCAL_BASE_URL")
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words

_SHAPES = re.compile(r"(?<![A-Za-z0-9_\-])(?:sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})"
                     r"|(?:(?<=Bearer )|(?<=bearer )|(?<=Basic )|(?<=basic ))[A-Za-z0-9._~+/\-]{8,}=*")
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)(?P<info>[^/?#\s@\"'<>]+)@", re.IGNORECASE)
_SECRET_PARAMS = r"(?:x-goog-api-key|api[-_]?key|apikey|key|access[-_]?token|token|auth|password|secret|sig|signature)"
_PARAM = re.compile(r"(?P<name>(?<![A-Za-z0-9_\-])" + _SECRET_PARAMS + r")(?P<sep>=|%3D)(?P<value>[^&#\s\"'<>,;)]+)",
                    re.IGNORECASE)

_file_cache: dict[Path, tuple[tuple[int, int] | None, frozenset[str]]] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _cached(path: Path, read) -> frozenset[str]:
    """A file's secrets, read again only when the file changed."""
    stamp = _stamp(path)
    hit = _file_cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    values: frozenset[str] = frozenset()
    if stamp is not None:
        try:
            values = frozenset(read(path))
        except Exception:  # noqa: BLE001 - a broken file is reported by its reader, not here
            values = frozenset()
    _file_cache[path] = (stamp, values)
    return values


def _keys_file_values(path: Path) -> list[str]:
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    # Stripped as settings.provider_settings strips them: what is sent, and so what is echoed.
    return [v.strip() for v in data.values() if isinstance(v, str)] if isinstance(data, dict) else []


def _config_values(path: Path) -> list[str]:
    import tomllib

    conf = tomllib.loads(path.read_text(encoding="utf-8"))
    found: list[str] = []
    providers = conf.get("providers")
    for table in (providers.values() if isinstance(providers, dict) else ()):
        if not isinstance(table, dict):
            continue
        if isinstance(table.get("api_key"), str):
            found.append(table["api_key"].strip())
        if isinstance(table.get("base_url"), str):
            found.extend(url_secrets(table["base_url"]))
    return found


def url_secrets(url: str) -> list[str]:
    """The password (or token user name) and key-like query values inside a URL."""
    found = []
    for m in _USERINFO.finditer(url):
        found.extend(part for part in m.group("info").split(":", 1) if part)
    found.extend(m.group("value") for m in _PARAM.finditer(url))
    return found


def known_secrets() -> list[str]:
    """Every secret the user configured, longest first (so a key inside another goes second)."""
    from . import config

    values: set[str] = set()
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value:
            values.add(value.strip())
    for var in BASE_URL_ENV_VARS:
        value = os.environ.get(var)
        if value:
            values.update(url_secrets(value))
    try:
        values |= _cached(config.keys_path(), _keys_file_values)
        values |= _cached(config.config_path(), _config_values)
    except Exception:  # noqa: BLE001 - no home folder: the environment's secrets still count
        pass
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact(text: str, secrets: list[str] | tuple[str, ...] | None = None) -> str:
    """`text` with every secret masked; `secrets` adds values known to the caller."""
    if not text:
        return text
    text = str(text)
    from urllib.parse import quote

    extra = [s for s in (secrets or ()) if s and len(s) >= MIN_SECRET_LEN]
    for secret in sorted(set(extra), key=len, reverse=True) + known_secrets():
        # As sent, and as a URL or a log line quotes it (a key with + / = in a query string).
        for form in (secret, quote(secret, safe="")):
            if form in text:
                text = text.replace(form, MASK)
    text = _USERINFO.sub(_mask_userinfo, text)
    text = _PARAM.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    return _SHAPES.sub(MASK, text)


def _mask_userinfo(m: re.Match) -> str:
    user, sep, _ = m.group("info").partition(":")
    if not sep:  # a single token before the @ is a credential too
        return f"{m.group('scheme')}{MASK}@"
    return f"{m.group('scheme')}{user}:{MASK}@"


def public_url(url: str | None) -> str | None:
    """A base URL fit to show: no user:password@, no query (where a key could hide)."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "(unparseable URL hidden)"


__all__ = ["redact", "known_secrets", "url_secrets", "public_url", "MASK", "SECRET_ENV_VARS"]
