"""The live page's article (Readability in the browser) against trafilatura's extraction.

Each page in tests/data/corpus/readability has article.html: the article the extension's
Readability found when the page was opened in headless Chromium (saved by
bench/article_quality.py --save). With it, extraction must lose on no page (word F1 at least
as high as from the HTML alone) and gain on the mean.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from extract_score import pages, visible_text, word_f1
from hybrid_engine.article import article_markdown, choose
from hybrid_engine.extract import extract_main

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "data" / "corpus" / "readability"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def scored() -> dict[str, tuple[float, float, str]]:
    out = {}
    for page in pages(CORPUS):
        reference = visible_text(_read(page / "expected.html"))
        source = _read(page / "source.html")
        alone = word_f1(extract_main(source)["text"], reference)
        result = extract_main(source, article=_read(page / "article.html"))
        out[page.name] = (alone, word_f1(result["text"], reference), result["source"])
    return out


def test_the_article_loses_on_no_repository_page(scored):
    lost = {name: (a, b) for name, (a, b, _) in scored.items() if b < a - 1e-9}
    assert not lost


def test_the_article_raises_mean_f1_on_the_repository_pages(scored):
    alone = statistics.mean(a for a, _, _ in scored.values())
    chosen = statistics.mean(b for _, b, _ in scored.values())
    assert chosen >= 0.97 and chosen > alone


def test_an_article_that_disagrees_with_trafilatura_is_not_used():
    text = "The harbour survey found the north basin silted up by forty centimetres. " * 5
    assert choose(text, "<p>Share this on social media. Subscribe to our newsletter.</p>") == (text, "html")


def test_an_article_that_agrees_is_used_as_markdown():
    text = "The harbour survey found the north basin silted up."
    article = "<h2>Survey</h2><p>The harbour survey found the north basin silted up.</p><ul><li>six weeks</li></ul>"
    assert choose(text, article) == ("## Survey\n\nThe harbour survey found the north basin silted up.\n\n- six weeks",
                                     "article")


def test_without_an_article_extraction_says_it_used_the_html():
    assert extract_main("<html><body><p>Hello there, reader.</p></body></html>", article="")["source"] == "html"


def test_article_markdown_keeps_code_blocks_as_they_were():
    assert article_markdown("<p>Run:</p><pre>  make\n    test</pre>") == "Run:\n\n```\n  make\n    test\n```"


def test_article_markdown_reads_nested_blocks_without_recursion():
    html = "<div>" * 200 + "<p>deep words</p>" + "</div>" * 200
    assert article_markdown(html) == "deep words"


def test_an_article_nested_past_the_parser_limit_falls_back_to_trafilatura():
    html = "<div>" * 5000 + "<p>deep words</p>" + "</div>" * 5000
    assert choose("deep words from trafilatura", html) == ("deep words from trafilatura", "html")
