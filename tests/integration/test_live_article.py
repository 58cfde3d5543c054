"""The live page's article (Readability in the browser) through the real host: a capture's
`page.article` reaches extract_text, which uses it when it agrees with trafilatura's text,
and an estimate counts the text the run would send."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_client import HostClient
from polling import wait_for

# The raw HTML hides most of the story behind a script (as pages that load their body do);
# the rendered page, which Readability read, has all of it.
RAW = """<!doctype html><html><head><title>Tide tables</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article><h1>Tide tables</h1><p>The spring tide reaches the harbour wall twice a month, at new and full moon.</p>
<div id="rest">Loading…</div></article><footer>Copyright the harbour office</footer></body></html>"""
ARTICLE = """<div><h1>Tide tables</h1><p>The spring tide reaches the harbour wall twice a month, at new and
full moon.</p><p>Neap tides, a week later, leave the mud flats of the north basin dry for six hours.</p></div>"""


@pytest.fixture
def host(he_home: Path):
    from hybrid_engine.templates import seed_templates

    seed_templates(he_home / "templates")
    with HostClient(he_home) as client:
        client.call("hello", protocol=1)
        yield client


def _completed_text_step(host, run_id):
    def done():
        step = next(s for s in host.call("runs.get", run_id=run_id)["steps"] if s["id"] == "text")
        return step if step["status"] == "COMPLETED" else None
    return wait_for(done, 60, what="the extract_text step to complete")


def test_a_captured_article_that_agrees_becomes_the_extracted_text(host):
    run_id = host.call("capture", template="page-text",
                       page={"content": RAW, "article": ARTICLE, "source_url": "https://example.org/tides"})["run_id"]
    step = _completed_text_step(host, run_id)
    assert step["outputs"]["source"] == "article"
    assert "Neap tides, a week later" in step["outputs"]["text"]
    assert step["outputs"]["text"].startswith("# Tide tables")


def test_a_capture_without_an_article_extracts_from_the_html(host):
    run_id = host.call("capture", template="page-text", page={"content": RAW})["run_id"]
    step = _completed_text_step(host, run_id)
    assert step["outputs"]["source"] == "html"
    assert "spring tide" in step["outputs"]["text"] and "Neap" not in step["outputs"]["text"]


def test_page_article_that_is_not_text_is_a_bad_request_naming_the_field(host):
    err = host.error("capture", template="page-text", page={"content": RAW, "article": 42})
    assert err["code"] == "bad_request" and err.get("field") == "page.article"


def test_a_long_article_rendered_by_script_is_used_though_the_html_had_only_its_teaser(host):
    long_article = ARTICLE + "<p>" + "Neap tides leave the mud flats of the north basin dry. " * 400 + "</p>"
    run_id = host.call("capture", template="page-text", page={"content": RAW, "article": long_article})["run_id"]
    assert _completed_text_step(host, run_id)["outputs"]["source"] == "article"


def test_the_estimate_counts_the_article_the_run_would_send(host):
    long_article = ARTICLE + "<p>" + "Neap tides leave the mud flats of the north basin dry. " * 400 + "</p>"
    page = {"content": RAW, "article": long_article}
    with_article = host.call("estimate", template="page-digest", page=page)
    without = host.call("estimate", template="page-digest", page={"content": RAW})
    assert with_article["steps"][0]["prompt_tokens"] > without["steps"][0]["prompt_tokens"] + 3000
