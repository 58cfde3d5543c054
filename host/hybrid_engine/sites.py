"""Per-site rules: which pages may be captured, and where their text may go.

config.toml holds them as `[[sites]]` tables (settings.py checks them):

    [[sites]]
    match = "*.mybank.com"     # the host and every subdomain; "mybank.com": that host only
    rule = "never"             # never | local_only | strip_query

A `match` is a host name, `*.` followed by a host name, or an IP network in CIDR form
("10.0.0.0/8", "fc00::/7"), which matches pages whose host is an address in it. Hosts are
compared as browsers send them: lower case, without the trailing dot or the port, and
international names in their ASCII (punycode) form, so "BANK.example." and "bank.example:443"
are the same host and a pattern written in Unicode matches its punycode page. A URL without
a host (file:, data:, about:) matches no rule.

A leaf module: no imports from the package, nothing read from disk.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

NEVER, LOCAL_ONLY, STRIP_QUERY = "never", "local_only", "strip_query"
RULES = (NEVER, LOCAL_ONLY, STRIP_QUERY)

# Offered in Options and the README, never applied unless the user adds them.
DEFAULTS: tuple[tuple[str, str, str], ...] = (
    ("*.local", NEVER, "mDNS names on the home or office network"),
    ("*.internal", NEVER, "intranet names"),
    ("*.intranet", NEVER, "intranet names"),
    ("*.corp", NEVER, "intranet names"),
    ("*.lan", NEVER, "home network names"),
    ("10.0.0.0/8", NEVER, "private network addresses"),
    ("172.16.0.0/12", NEVER, "private network addresses"),
    ("192.168.0.0/16", NEVER, "private network addresses"),
    ("fc00::/7", NEVER, "private IPv6 addresses"),
    ("mail.google.com", LOCAL_ONLY, "web mail"),
    ("outlook.live.com", LOCAL_ONLY, "web mail"),
    ("outlook.office.com", LOCAL_ONLY, "web mail"),
    ("*.paypal.com", NEVER, "payments"),
)


class PatternError(ValueError):
    """A `match` that is neither a host, `*.` and a host, nor a CIDR network."""


@dataclass(frozen=True)
class SiteRule:
    match: str
    rule: str

    def matches(self, host: str) -> bool:
        return _matches(_pattern(self.match), host)


def normal_host(host: str) -> str:
    """A host as compared: lower case, no trailing dot, ASCII (punycode) labels."""
    host = host.strip().rstrip(".").lower()
    if not host or host.isascii():
        return host
    try:  # the IDNA mapping also turns full-width dots into dots: strip the trailing one again
        return host.encode("idna").decode("ascii").rstrip(".")
    except UnicodeError:
        return host


# Read as a browser reads them (the WHATWG URL standard), not as RFC 3986 does: for these
# schemes a backslash is a slash and any number of slashes may follow the colon, so
# "https://bank.example\@evil.test/" and "https:bank.example" are pages of bank.example.
_SPECIAL = frozenset({"http", "https", "ws", "wss", "ftp"})
# A page whose URL wraps another's is that page: its text comes from the inner URL's site.
_WRAPPERS = frozenset({"blob", "view-source"})
_CONTROL = re.compile(r"[\t\n\r]")


def host_of(url: str | None) -> str | None:
    """The normalised host of a page URL; None when it has none or cannot be parsed."""
    if not isinstance(url, str):
        return None
    text = _CONTROL.sub("", url.strip("\x00 \t\n\r\f\v"))  # browsers drop these before parsing
    if not text:
        return None
    special = True
    scheme = _SCHEME.match(text)
    if scheme and not scheme.group(2)[:1].isdigit():  # "bank.example:8443" is a host and port
        name, text = scheme.group(1).lower(), scheme.group(2)
        if name in _WRAPPERS:
            return host_of(text)
        special = name in _SPECIAL
        if not special and not text.startswith("//"):
            return None  # mailto:, data:, about:, javascript: name no page host
    if special:
        text = text.lstrip("/\\")
    else:
        text = text[2:]
    authority = re.split(r"[/\\?#]", text, maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        host = host[1:end]
    else:
        host = re.sub(r":[0-9]*$", "", host)
        if "%" in host:
            host = unquote(host, errors="strict") if _valid_escapes(host) else host
    return normal_host(host) or None


def _valid_escapes(text: str) -> bool:
    try:
        unquote(text, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


_LEGACY_V4 = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)  # "bank.example:8443" is a host and port


def _ip(host: str):
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not _LEGACY_V4.match(host):
            return None
        import socket

        try:  # "0x0a.1", "167772161": forms browsers read as IPv4 addresses
            addr = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


@functools.lru_cache(maxsize=512)
def _pattern(match: str):
    """A compiled pattern: ("net", network) or ("host", host, with_subdomains)."""
    text = match.strip()
    if "/" in text:
        try:
            return ("net", ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise PatternError(f"a CIDR network such as 10.0.0.0/8 ({exc})") from None
    wild = text.startswith("*.")
    host = normal_host(text[2:] if wild else text)
    if not host or "*" in host or any(c in host for c in "/:?#@ ") or ".." in host:
        raise PatternError("a host name, '*.' and a host name, or a CIDR network such as "
                           "10.0.0.0/8")
    return ("host", host, wild)


def check_pattern(match: str) -> None:
    """Raises PatternError whose message is what a `match` should look like."""
    _pattern(match)


def _matches(pattern, host: str) -> bool:
    if pattern[0] == "net":
        addr = _ip(host)
        return addr is not None and addr.version == pattern[1].version and addr in pattern[1]
    _, want, wild = pattern
    return host == want or (wild and host.endswith("." + want))


def rules_for(url: str | None, rules) -> frozenset[str]:
    """Every rule whose match covers the page's host (several may apply at once)."""
    host = host_of(url)
    if host is None:
        return frozenset()
    return frozenset(r.rule for r in rules if r.matches(host))


def strip_query(url: str | None) -> str | None:
    """The URL without its query string and fragment (where tokens and search terms sit)."""
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def is_local_address(host: str | None) -> bool:
    """A host on this machine or the private network: loopback, private or link-local
    addresses, `localhost`, and `.local` / `.internal` / `.lan` names."""
    if not host:
        return False
    host = normal_host(host)
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return True
    addr = _ip(host)
    return addr is not None and (addr.is_loopback or addr.is_private or addr.is_link_local)


def is_local_provider(provider: str | None, base_url: str | None) -> bool:
    """`local` (an OpenAI-compatible server) at an address on this machine or the private
    network. The cloud providers never count, whatever their base URL: a proxy on 127.0.0.1
    may forward to the cloud."""
    if provider != "local" or not isinstance(base_url, str):
        return False
    try:  # HTTP clients read a URL by RFC 3986, browsers by WHATWG: local by both, or not local
        client_host = urlsplit(base_url.strip()).hostname
    except ValueError:
        return False
    return is_local_address(host_of(base_url)) and is_local_address(client_host)


__all__ = ["is_local_provider", "RULES", "NEVER", "LOCAL_ONLY", "STRIP_QUERY", "DEFAULTS", "SiteRule", "PatternError",
           "check_pattern", "host_of", "normal_host", "rules_for", "strip_query", "is_local_address"]
