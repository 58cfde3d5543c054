"""Main-content extraction behind the `extract_text` action.

A captured page is mostly chrome (navigation, ads, footers, comment threads) that
costs tokens and distracts a model, so the engine hands models the article alone,
as markdown. The step must be deterministic and offline: a retried or recovered step
has to produce the same text, and a capture must never cause a network fetch.

trafilatura is imported inside `extract_main`, not here: the native host imports the
service layer before answering the browser's first message, and trafilatura (lxml,
htmldate, justext, ...) costs a noticeable fraction of a second to import.

The settings were chosen by measurement on the 130 pages of Mozilla Readability's
test corpus (word-overlap F1 against Readability's reference output, see
tests/unit/test_extract_quality.py); the numbers are in the comments below.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["extract_main"]

# The same page is extracted again and again while the popup is open: reopened on the page,
# another workflow chosen (each is estimated on the page). extract_main is deterministic, so
# the last few results are kept, keyed by a hash of everything that decides them.
_CACHE_ENTRIES = 8
_CACHE_MAX_CHARS = 4_000_000  # a huge page is not kept: its text would sit in memory
_cache: "OrderedDict[bytes, dict[str, str]]" = OrderedDict()
_cache_lock = threading.Lock()

# A recall-oriented first pass that comes back shorter than this (in characters) is
# double-checked with trafilatura's balanced mode. Recall wins on most pages (mean F1
# 0.941 vs 0.938 for balanced), but on index-like pages it can latch onto the first
# teaser alone (a news front page went from 0.51 to 0.07). The check only runs for
# short results, so long articles pay for one pass.
_SHORT_RESULT_CHARS = 1000

# What the reader could not see when the page was captured should not reach a model.
# trafilatura keeps inline-hidden elements; Readability drops them. Only inline
# styles and the `hidden` attribute can be judged without a CSS engine. (aria-hidden
# was measured too: no gain, and it also marks visible decorative text.)
_STYLE = "translate(@style, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ \t\r\n', 'abcdefghijklmnopqrstuvwxyz')"
_HIDDEN_XPATHS = [
    "//*[@hidden]",
    "//template",  # never drawn: a browser keeps its content out of the page
    f"//*[contains({_STYLE}, 'display:none')]",
    f"//*[contains({_STYLE}, 'visibility:hidden')]",
]

# Decides whether the input is markup at all. A selection or a pasted note arrives as
# plain text and must come back as it was, not be run through an HTML parser (which
# would drop anything between `<` and `>` and collapse line breaks).
_KNOWN_TAG = re.compile(
    r"</?(?:!doctype|html|head|body|meta|link|title|script|style|div|span|p|a|br|hr|img"
    r"|article|main|section|header|footer|nav|aside|h[1-6]|ul|ol|li|dl|dt|dd|table|thead"
    r"|tbody|tr|td|th|pre|code|blockquote|em|strong|b|i|u|figure|figcaption|form|input"
    r"|button|iframe|noscript|svg)\b[^<>]*>",
    re.IGNORECASE,
)
# trafilatura rejects input without an <html> or <body> tag near the start as "not
# HTML", which would lose captured fragments (a selection's HTML, a pasted snippet).
_DOCUMENT_TAG = re.compile(r"<(?:html|body)\b", re.IGNORECASE)

_INVISIBLE_BLOCK = re.compile(r"<(script|style|noscript|template)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)

# Where a page states its own title, most specific first (Readability's order). These
# beat trafilatura's metadata title, which prefers the first <h1>, on the corpus:
# 114/130 titles equal Readability's against 85/130 (and 65/130 for <title> alone).
_TITLE_META_KEYS = (
    "dc:title",
    "dcterm:title",
    "og:title",
    "weibo:article:title",
    "weibo:webpage:title",
    "title",
    "twitter:title",
)


def extract_main(
    html: str,
    url: str | None = None,
    *,
    include_links: bool = False,
    include_tables: bool = True,
    article: str | None = None,
) -> dict[str, str]:
    """Reduce a captured page to its main content, as markdown, and its title.

    Never returns None and never raises on odd input: the result feeds a prompt, and
    an empty or degraded text is more useful to a run than a failed step. Empty input
    gives empty text; plain text comes back as it was; a page trafilatura cannot
    make sense of falls back to its visible body text.

    `url` (the page's address) only turns relative links into absolute ones when
    links are kept; nothing is ever fetched.
    `include_links` keeps `[text](href)` links (off by default: URLs cost tokens and
    measured F1 dropped from 0.93 to 0.89). `include_tables` keeps table content
    (on by default: dropping tables lost 0.01 F1 and data tables are often the point).
    `article` is the HTML of the article Readability found in the live page (the
    extension sends it); article.py decides whether it replaces trafilatura's text, and
    `source` in the result (present when `article` is given) says which was used
    ("article" or "html").
    """
    key = _cache_key(html, url, include_links, include_tables, article)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return dict(hit)
    result = _extract(html, url, include_links=include_links, include_tables=include_tables, article=article)
    if len(html) + len(article or "") <= _CACHE_MAX_CHARS:
        with _cache_lock:
            _cache[key] = dict(result)
            while len(_cache) > _CACHE_ENTRIES:
                _cache.popitem(last=False)
    return result


def _cache_key(html: str, url: str | None, include_links: bool, include_tables: bool, article: str | None) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for part in (html, url, article):
        data = b"\x00" if part is None else b"\x01" + part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big") + data)
    h.update(bytes([bool(include_links), bool(include_tables)]))
    return h.digest()


def _extract(html: str, url: str | None, *, include_links: bool, include_tables: bool,
             article: str | None) -> dict[str, str]:
    from .article import choose

    if not html or not html.strip():
        return _result(*choose("", article), "", article)
    if not _KNOWN_TAG.search(html):
        return _result(html.strip(), "html", "", article)

    # heavy and slow to import: deferred until a page is actually extracted
    import trafilatura

    document = html if _DOCUMENT_TAG.search(html) else f"<html><body>{html}</body></html>"
    tree = trafilatura.load_html(document)
    if tree is None:
        return _result(*choose(_strip_tags(html), article), "", article)

    options: dict[str, Any] = {
        "url": url,
        "output_format": "markdown",
        # comments are not the main content: excluding them raised F1 0.927 -> 0.932
        "include_comments": False,
        "include_links": include_links,
        "include_tables": include_tables,
        "prune_xpath": _HIDDEN_XPATHS,
    }
    text = _run(trafilatura, tree, favor_recall=True, **options)
    if len(text) < _SHORT_RESULT_CHARS:
        balanced = _run(trafilatura, tree, **options)
        if len(balanced) > len(text):
            text = balanced
    if not text:
        text = _fallback_text(trafilatura, tree)
    return _result(*choose(text, article), _title(tree), article)


def _result(text: str, source: str, title: str, article: str | None) -> dict[str, str]:
    """`source` is there when an article was offered: callers that never pass one see the old shape."""
    out = {"text": text, "title": title}
    if article is not None:
        out["source"] = source
    return out


def _run(trafilatura: Any, tree: Any, **options: Any) -> str:
    """One trafilatura pass; a crash inside the library degrades to "no result"."""
    try:
        result = trafilatura.extract(tree, **options)
    except Exception:  # noqa: BLE001 - third-party heuristics on arbitrary pages
        return ""
    return (result or "").strip()


def _fallback_text(trafilatura: Any, tree: Any) -> str:
    """Text for pages trafilatura finds no article in (very short or unusual pages).

    baseline() looks at embedded JSON-LD, <article>, paragraphs, and finally the
    whole body; html2txt is the last resort so that a non-empty page always yields
    its visible text.
    """
    for attempt in (lambda: trafilatura.baseline(tree)[1], lambda: trafilatura.html2txt(tree)):
        try:
            text = (attempt() or "").strip()
        except Exception:  # noqa: BLE001 - same reason as in _run
            continue
        if text:
            return text
    return ""


def _title(tree: Any) -> str:
    """The title the page gives itself: its metadata, else <title>, else the first <h1>."""
    stated: dict[str, str] = {}
    for meta in tree.iter("meta"):
        content = _one_line(meta.get("content"))
        if not content:
            continue
        for attribute in ("property", "name"):
            # property="og:title article:title" is legal; DC.title is the same as dc:title
            for key in (meta.get(attribute) or "").lower().replace(".", ":").split():
                stated.setdefault(key, content)
    for key in _TITLE_META_KEYS:
        if key in stated:
            return stated[key]
    for path in (".//title", ".//h1"):
        element = tree.find(path)
        if element is not None and (text := _one_line(element.text_content())):
            return text
    return ""


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _strip_tags(html: str) -> str:
    """Last resort when no parser accepts the input: drop the markup, keep the words."""
    html = _INVISIBLE_BLOCK.sub(" ", html)
    return re.sub(r"[ \t]+", " ", re.sub(r"<[^>]*>", " ", html)).strip()
