"""Main-text extraction (`extract_text`): quality on real pages, and the edge cases.

Quality is measured on 11 of the 130 pages of Mozilla Readability's own test suite, kept
in tests/data/corpus/readability (chosen for variety: English, German, Spanish, Chinese,
Japanese and right-to-left pages, a page whose title Readability takes from the body, one
whose share buttons trafilatura keeps; see its README.md). Each page's reference is
Readability's output, expected.html, i.e. what Firefox Reader View shows; the score is
word-overlap F1 (tests/extract_score.py). The floors below are the measured figures minus a
margin, so a change of settings or a trafilatura upgrade that makes extraction worse fails
here. The whole corpus is bench/extract_quality.py's.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from extract_score import WORD, pages, same_title, score
from hybrid_engine.extract import extract_main

PROJECT = Path(__file__).resolve().parents[2]
CORPUS = PROJECT / "tests" / "data" / "corpus" / "readability"
SAMPLE_PAGE = PROJECT / "examples" / "sample-page.html"

# Measured on these 11 pages (trafilatura 2.3.1: markdown, favor_recall, no comments, hidden
# elements pruned, balanced pass for short results): mean F1 0.895, 9 titles equal
# Readability's. Floors: F1 measured - 0.025, rounded down; one title fewer.
MEAN_F1_FLOOR = 0.87
TITLES_FLOOR = 8
EXPECTED_PAGES = 11


@pytest.fixture(scope="module")
def corpus_results() -> dict[str, dict]:
    return {page.name: score(page, extract_main) for page in pages(CORPUS)}


# --- the corpus -----------------------------------------------------------------------


def test_corpus_holds_every_reference_page():
    assert len(pages(CORPUS)) == EXPECTED_PAGES, f"{CORPUS} is incomplete"
    assert (CORPUS / "LICENSE.md").is_file()


def test_no_corpus_page_makes_extraction_crash(corpus_results):
    crashed = {name: r["error"] for name, r in corpus_results.items() if "error" in r}
    assert not crashed


def test_every_corpus_page_yields_text(corpus_results):
    empty = [name for name, r in corpus_results.items() if "result" in r and not r["result"]["text"].strip()]
    assert not empty


def test_every_corpus_page_with_a_title_yields_one(corpus_results):
    untitled = [
        name for name, r in corpus_results.items()
        if "result" in r and r["title"].strip() and not r["result"]["title"].strip()
    ]
    assert not untitled


def test_mean_word_f1_against_readability_reaches_the_floor(corpus_results):
    scores = {name: r["f1"] for name, r in corpus_results.items() if "f1" in r}
    mean = statistics.mean(scores.values())
    worst = sorted(scores.items(), key=lambda item: item[1])[:5]
    assert mean >= MEAN_F1_FLOOR, f"mean F1 {mean:.4f} < {MEAN_F1_FLOOR}; worst pages: {worst}"


def test_most_titles_match_readabilitys(corpus_results):
    matching = sum(same_title(r["result"]["title"], r["title"]) for r in corpus_results.values() if "result" in r)
    assert matching >= TITLES_FLOOR, f"only {matching}/{len(corpus_results)} titles equal Readability's (measured 9)"


# --- focused behaviours ---------------------------------------------------------------


ARTICLE = (
    "Sourdough starters are small ecosystems of wild yeast and lactic acid bacteria. "
    "The bacteria make acid that keeps other microbes out, and the yeast makes the gas "
    "that raises the bread. Feeding dilutes the acid and supplies fresh starch. "
)


def page(body: str, head: str = "<title>Sourdough basics | Bakery</title>") -> str:
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"


def test_title_comes_from_the_pages_own_metadata_first():
    html = page(f"<article><p>{ARTICLE}</p></article>",
                head='<title>Sourdough basics | Bakery</title><meta property="og:title" content="Sourdough basics">')
    assert extract_main(html)["title"] == "Sourdough basics"


def test_title_falls_back_to_the_title_element():
    assert extract_main(page(f"<article><h1>Other heading</h1><p>{ARTICLE}</p></article>"))["title"] == (
        "Sourdough basics | Bakery"
    )


def test_plain_text_passes_through_unchanged():
    text = "Shopping list:\n- flour < 2 kg\n- rye > wheat? <3\n\nCall the baker at 9."
    assert extract_main(text) == {"text": text, "title": ""}


def test_template_syntax_inside_a_page_is_kept_verbatim():
    html = page(f"<article><p>{ARTICLE}</p><p>Write {{{{ steps.x.outputs.y }}}} to use an output.</p></article>")
    assert "{{ steps.x.outputs.y }}" in extract_main(html)["text"]


@pytest.mark.parametrize("html", ["", "   \n\t "], ids=["empty", "whitespace"])
def test_empty_input_gives_empty_text(html):
    assert extract_main(html) == {"text": "", "title": ""}


def test_a_page_without_content_gives_empty_text_not_an_error():
    assert extract_main(page("<script>var x = 1;</script>"))["text"] == ""


def test_an_html_fragment_such_as_a_selection_is_extracted():
    result = extract_main("<p>The starter <b>doubled</b> overnight.</p><p>Bake at dawn.</p>")
    assert "doubled" in result["text"] and "Bake at dawn." in result["text"]
    assert "<p>" not in result["text"]


def test_content_hidden_by_inline_style_or_attribute_is_dropped():
    html = page(
        f"<article><p>{ARTICLE}</p>"
        '<p style="display: none">Invisible paragraph one.</p>'
        "<p hidden>Invisible paragraph two.</p>"
        '<div style="VISIBILITY:hidden"><p>Invisible paragraph three.</p></div></article>'
    )
    assert "Invisible" not in extract_main(html)["text"]


def test_the_content_of_a_template_element_is_dropped():
    html = page(f"<article><p>{ARTICLE}</p><template><p>Invisible template paragraph.</p></template></article>")
    assert "Invisible" not in extract_main(html)["text"]


def test_links_are_kept_only_on_request():
    html = page(f'<article><p>{ARTICLE} See <a href="https://example.org/rye">rye starters</a>.</p></article>')
    assert "https://example.org/rye" not in extract_main(html)["text"]
    assert "(https://example.org/rye)" in extract_main(html, include_links=True)["text"]


def test_tables_are_kept_unless_excluded():
    table = "<table><tr><th>Ratio</th><th>Peak</th></tr><tr><td>1:1:1</td><td>fourhours</td></tr></table>"
    html = page(f"<article><p>{ARTICLE}</p>{table}<p>{ARTICLE}</p></article>")
    assert "fourhours" in extract_main(html)["text"]
    assert "fourhours" not in extract_main(html, include_tables=False)["text"]


def test_a_five_megabyte_page_is_extracted_whole():
    """Its time is bench/extract_quality.py's; here, that nothing of it is lost."""
    rng = random.Random(7)
    vocabulary = ARTICLE.lower().replace(".", "").replace(",", "").split()
    paragraphs = "".join(f"<p>Note {i}: {' '.join(rng.choices(vocabulary, k=90))}.</p>\n" for i in range(9500))
    html = page(f"<nav><a href='/'>Home</a></nav><article><h1>Long notes</h1>{paragraphs}</article>")
    assert len(html) > 5_000_000
    result = extract_main(html)
    assert "Note 0:" in result["text"] and "Note 9499:" in result["text"] and len(result["text"]) > 4_000_000


def test_the_sample_page_keeps_the_article_and_drops_the_chrome():
    result = extract_main(SAMPLE_PAGE.read_text(encoding="utf-8"))
    text = result["text"]
    assert result["title"] == "How a Sourdough Starter Works"
    for kept in ("Two kinds of tenants", "hooch", "Treat it as a pet that eats flour"):
        assert kept in text
    for dropped in ("Sign in", "ProProof", "Most popular", "breadhead_88", "All rights reserved", "cookies"):
        assert dropped not in text
    assert len(WORD.findall(text)) > 850


def test_importing_the_module_does_not_import_trafilatura():
    code = "import sys, hybrid_engine.extract; sys.exit('trafilatura' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT / "host"), os.environ.get("PYTHONPATH", "")])}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0
