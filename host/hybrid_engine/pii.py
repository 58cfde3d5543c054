"""Personal data replaced before a page's text goes to a cloud model.

A template asks for it with `redact: [email, phone, card, iban, api_key]`; every model step
whose provider is not local then sends its prompt with each match replaced by a marker
(`[email]`, `[card]`, ...) and records how many of each it replaced. Local models get the
text as it is: it does not leave the machine.

False positives cost the user part of their page, so the number shapes are checked, not
just matched: a card number must pass the Luhn check and an IBAN the ISO 7064 mod-97 check;
a phone number needs a leading + or separators between its groups and 9 to 15 digits, so
dates, prices, IP addresses and order numbers stay. Secrets of the user's own providers are
masked by redact.py everywhere; here `api_key` means key-shaped strings in the page.

A leaf module: the standard library only.
"""

from __future__ import annotations

import re

KINDS = ("email", "phone", "card", "iban", "api_key")

# Letters of any script: "jörg@straße.de" is an address as much as "joerg@strasse.de".
_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-])")
_API_KEY = re.compile(
    r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,.]|-(?!----)){0,16000}-----END [A-Z ]{0,20}PRIVATE KEY-----"
    r"|(?<![A-Za-z0-9_-])(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{20,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})(?![A-Za-z0-9_-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)"
                   r"(?![A-Za-z0-9])")
# Pages set card numbers with no-break or thin spaces as often as with plain ones.
_SEP = " \u00a0\u2007\u2009\u202f-"
_CARD = re.compile(rf"(?<!\d)(?<!\d[.,-])\d(?:[{_SEP}]?\d){{12,18}}(?!\d|[.,-]\d)")
_PHONE = re.compile(r"(?<![\w+.#-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ -]?)?\d{1,4}(?:[ -]\d{1,8}){1,5}(?![\w-]|\.\d)"
                    r"|(?<![\w+.-])\+\d{8,15}(?![\w-]|\.\d)"
                    r"|(?<![\w.])\d{3}\.\d{3}\.\d{4}(?![\w.])")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{4}")
_GROUPED = re.compile(r"\d{1,3}(?: \d{3}){3,}")  # "10 000 000 000": a count written in thousands


def luhn_ok(digits: str) -> bool:
    total, double = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616: length 15 to 34, and the number read with letters as 10..35 is 1 mod 97."""
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _card(m: re.Match) -> bool:
    digits = re.sub(f"[{_SEP}]", "", m.group(0))
    return 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1


def _phone(m: re.Match) -> bool:
    text = m.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if not 9 <= digits <= 15 or _DATE.match(text.strip()) or _GROUPED.fullmatch(text):
        return False  # a date (with a time after it) or a big number, not a phone
    if m.string[m.end():m.end() + 1] == ":":  # "10:30": the hour of a time
        return False
    if digits == 13 and text.startswith(("978-", "979-")):  # an ISBN
        return False
    groups = re.split(r"[ -]", text)
    if all(len(g) == 4 and g[:2] in ("19", "20") for g in groups):  # a list of years
        return False
    return text.startswith("+") or "(" in text or any(sep in text for sep in " -.")


_CHECKS = (
    ("api_key", _API_KEY, None),
    ("email", _EMAIL, None),
    ("iban", _IBAN, lambda m: iban_ok(m.group(0))),
    ("card", _CARD, _card),
    ("phone", _PHONE, _phone),
)


def check_kinds(kinds) -> list[str]:
    """The names in `kinds` that are not kinds of personal data this module knows."""
    return [k for k in kinds if k not in KINDS]


def scrub(text: str, kinds) -> tuple[str, dict[str, int]]:
    """`text` with every match of `kinds` replaced by `[kind]`, and how many of each."""
    counts: dict[str, int] = {}
    if not text or not kinds:
        return text, counts
    wanted = set(kinds)
    for kind, pattern, valid in _CHECKS:
        if kind not in wanted:
            continue
        n = 0

        def replace(m: re.Match, kind=kind, valid=valid) -> str:
            nonlocal n
            if valid is not None and not valid(m):
                return m.group(0)
            n += 1
            return f"[{kind}]"
        text = pattern.sub(replace, text)
        if n:
            counts[kind] = n
    return text, counts


__all__ = ["KINDS", "scrub", "check_kinds", "luhn_ok", "iban_ok"]
