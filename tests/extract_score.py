"""How extracted text is scored against a reference, shared by tests/unit/test_extract_quality.py
(on the pages in tests/data/corpus) and bench/extract_quality.py (on the whole corpus).

Score: word-overlap F1. Both texts are lowercased and cut into words with the regex
`\\w+` (Unicode letters, digits, underscore; markdown and HTML punctuation are not
words). Each text is a multiset of words (a bag: repeats count). With overlap =
the size of the multiset intersection (per word, the smaller of the two counts):
    precision = overlap / words in the extracted text
    recall    = overlap / words in the reference text
    F1        = 2 * precision * recall / (precision + recall), 0 when overlap is 0
The reference text is the visible text of expected.html (script, style, noscript and
template contents removed): what Firefox Reader View shows.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import lxml.html

WORD = re.compile(r"\w+")


def words(text: str) -> Counter[str]:
    return Counter(WORD.findall(text.lower()))


def word_f1(extracted: str, reference: str) -> float:
    got, want = words(extracted), words(reference)
    overlap = sum((got & want).values())
    if overlap == 0:
        return 1.0 if not got and not want else 0.0
    precision = overlap / sum(got.values())
    recall = overlap / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def visible_text(html: str) -> str:
    root = lxml.html.fromstring(html)
    for hidden in root.xpath("//script | //style | //noscript | //template"):
        hidden.drop_tree()
    return " ".join(root.itertext())


def same_title(a: str, b: str) -> bool:
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()


def pages(corpus: Path) -> list[Path]:
    """The page folders of a corpus: <page>/source.html, expected.html, expected-metadata.json."""
    return sorted(p for p in corpus.iterdir() if (p / "source.html").is_file())


def score(page: Path, extract) -> dict:
    """Extract one page; a crash is recorded against the page, not raised."""
    source = (page / "source.html").read_text(encoding="utf-8", errors="replace")
    reference = visible_text((page / "expected.html").read_text(encoding="utf-8", errors="replace"))
    metadata = json.loads((page / "expected-metadata.json").read_text(encoding="utf-8"))
    try:
        extracted = extract(source)
    except Exception as exc:  # noqa: BLE001 - reported per page by the caller
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"result": extracted, "f1": word_f1(extracted["text"], reference),
            "title": metadata.get("title") or ""}
