"""A page's title, as the library, batches and the URL fetcher keep it.

A page chooses its own title, and its length: the title rides in every runs.list, search
result and batch.get, so it is cut to MAX_TITLE characters everywhere it is kept. A title
read from HTML is text to show, never markup.

A leaf module: no imports from the package.
"""

from __future__ import annotations

import re

MAX_TITLE = 300
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def bounded(title: str | None) -> str | None:
    return title[:MAX_TITLE] if title else title


def html_title(content: str) -> str | None:
    """The <title> of an HTML page, read from its head only (the first 64 KiB), tags dropped,
    entities decoded, whitespace folded; None when it has none."""
    import html

    found = _TITLE.search(content[:65536])
    if not found:
        return None
    title = " ".join(html.unescape(re.sub(r"<[^>]*>", "", found.group(1))).split())
    return title[:MAX_TITLE] or None


__all__ = ["MAX_TITLE", "bounded", "html_title"]
