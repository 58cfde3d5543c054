"""The user's per-site rules ([[sites]] in config.toml) applied to pages and model steps.

Applied in the service layer so every way in gets them: the extension's captures, the
command line's `--source-url`, `ingest` and the HTTP API.

    admit(url)          a page about to be stored: `never` refuses it (SiteRefused),
                        `strip_query` drops its query and fragment
    local_only_guard    the executor's guard: a model step of a run whose page is on a
                        `local_only` site stops before sending unless its provider is local
    provider_is_local   `local` with a base URL on this machine or the private network;
                        the cloud providers are never local, whatever their base URL says
                        (a proxy on 127.0.0.1 may forward to the cloud)

Rules are read when they are applied, so a rule added while a run waits applies to it.
"""

from __future__ import annotations

from . import sites
from .config import ConfigError
from .errors import PermanentStepError, SiteRefused

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def rules(conf: dict | None = None) -> tuple:
    from . import settings

    return settings.sites(conf)


def page_rules(url: str | None, conf: dict | None = None) -> frozenset[str]:
    if not url:
        return frozenset()
    return sites.rules_for(url, rules(conf))


def refusal(url: str) -> str:
    return (f"{sites.host_of(url)} is a site you ruled `never` in [[sites]] of config.toml: its pages "
            "are not captured or sent to any model")


def admit(url: str | None, conf: dict | None = None, field: str = "source_url") -> str | None:
    """The URL to store for a page from `url`; SiteRefused when its site is ruled `never`."""
    found = page_rules(url, conf)
    if sites.NEVER in found:
        raise SiteRefused(refusal(url), field=field)
    if sites.STRIP_QUERY in found:
        return sites.strip_query(url)
    return url


def unstrip(req, url: str | None, stripped: str | None) -> None:
    """A stripped URL's query must not ride along where the URL stands in the text: an
    unreadable page (a PDF, a browser page) arrives as its title and address."""
    if not url or not stripped or url == stripped:
        return
    for old, new in ((url, stripped), (url.replace("&", "&amp;"), stripped.replace("&", "&amp;"))):
        for field in ("content", "title", "selection"):
            value = getattr(req, field, None)
            if isinstance(value, str) and old in value:
                setattr(req, field, value.replace(old, new))


def provider_is_local(provider: str | None, base_url: str | None = None) -> bool:
    if provider != "local":
        return False
    if base_url is None:
        from .settings import provider_settings

        base_url = provider_settings("local", keys_file=False).base_url
    return sites.is_local_provider(provider, base_url)


def blocked_reason(urls, provider: str | None, conf: dict | None = None) -> str | None:
    """Why a model step on pages from `urls` may not go to `provider`, or None."""
    if provider_is_local(provider):
        return None
    for url in urls:
        found = page_rules(url, conf)
        if sites.LOCAL_ONLY in found or sites.NEVER in found:
            rule = sites.LOCAL_ONLY if sites.LOCAL_ONLY in found else sites.NEVER
            return (f"{sites.host_of(url)} is ruled `{rule}` in [[sites]] of config.toml: its text may go "
                    f"to a local model only, and this step asks {provider}; nothing was sent. Use a "
                    "local_chat step (a local server such as Ollama) for this site, or change the rule")
    return None


def local_only_guard(store) -> "Any":
    """An executor guard: refuses a cloud model step on a run whose page is local_only."""
    def guard(c, params: dict, action) -> None:
        urls = store.source_urls(c.run_id)
        if not urls:
            return
        try:
            reason = blocked_reason(urls, action.spec.provider)
        except ConfigError as exc:  # the rules cannot be read: nothing goes out
            raise PermanentStepError(f"the site rules could not be read: {exc}", code="bad_config") from exc
        if reason:
            raise PermanentStepError(reason, code="site_local_only",
                                     metadata={"provider": action.spec.provider, "model": params.get("model")})
    return guard


__all__ = ["admit", "unstrip", "rules", "page_rules", "provider_is_local", "blocked_reason", "local_only_guard", "refusal"]
