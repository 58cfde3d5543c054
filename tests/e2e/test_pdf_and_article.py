"""PDFs and the live page's article, through the real extension in Chromium, the real host
and a fake model on loopback: a PDF tab and a PDF link are sent as the file's bytes and end
as a summary whose prompt cites pages; a page's Readability article reaches extract_text."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

from e2e_world import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdf_writer import text_pdf  # noqa: E402

pytestmark = pytest.mark.e2e

SURVEY = [
    ["Harbour survey 2026", "The north basin silted up by forty centimetres since the last survey."],
    ["Dredging plan", "Dredging the north basin will take six weeks and cost 1.2 million euros."],
    ["Wildlife", "A colony of terns nests on the breakwater; work stops between April and July."],
    ["Budget", "The council approved the dredging budget on 3 March."],
]


def _menu(chromium, info, tab):
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab})
    assert out.get("delivered"), out
    return out["result"]["run_id"]


def _step(doc, step_id):
    return next(s for s in doc["steps"] if s["id"] == step_id)


def test_a_pdf_tab_is_sent_as_its_bytes_and_ends_as_a_summary_citing_pages(chromium, he, site):
    data = text_pdf(SURVEY, title="Harbour survey")
    (site.root / "survey.pdf").write_bytes(data)
    url = site.url("survey.pdf")
    chromium.open(url)
    chromium.wait_connected()
    wait_for(lambda: chromium.bg("self.hybrid.state.templates.length") >= 2, what="templates listed")
    tab = {"id": chromium.tab_id(url), "url": url, "title": "survey.pdf"}
    run_id = _menu(chromium, {"menuItemId": "page:e2e-digest", "pageUrl": url, "frameId": 0}, tab)
    doc = he.wait_run(run_id)
    page = _step(doc, "page")["outputs"]
    assert page["content_type"] == "application/pdf"
    assert base64.b64decode(he.cli_json("export", run_id)["steps"][0]["outputs"]["content"]) == data
    assert _step(doc, "text")["outputs"]["pages"] == 4
    assert _step(doc, "summary")["status"] == "COMPLETED"
    [request] = he.fake.requests_for("local")
    prompt = request.body["messages"][-1]["content"]
    assert "[page 2]\nDredging plan" in prompt and "[page 4]\nBudget" in prompt


def test_a_link_to_a_pdf_sends_the_file_not_the_address(chromium, he, site):
    data = text_pdf(SURVEY[:2])
    (site.root / "linked.pdf").write_bytes(data)
    article = site.url("article.html")
    chromium.open(article)
    chromium.wait_connected()
    wait_for(lambda: chromium.bg("self.hybrid.state.templates.length") >= 2, what="templates listed")
    tab = {"id": chromium.tab_id(article), "url": article, "title": "The Durable Engine"}
    info = {"menuItemId": "link:e2e-echo", "linkUrl": site.url("linked.pdf"), "pageUrl": article, "frameId": 0}
    run_id = _menu(chromium, info, tab)
    he.wait_run(run_id)
    page = he.cli_json("export", run_id)["steps"][0]["outputs"]
    assert page["content_type"] == "application/pdf" and base64.b64decode(page["content"]) == data


def test_a_page_capture_carries_readabilitys_article_and_extract_text_uses_it(chromium, he, site):
    article = site.url("article.html")
    chromium.open(article)
    chromium.wait_connected()
    wait_for(lambda: chromium.bg("self.hybrid.state.templates.length") >= 2, what="templates listed")
    tab = {"id": chromium.tab_id(article), "url": article, "title": "The Durable Engine"}
    page = chromium.bg("self.hybrid.capturePage(arg).then(c => c.page)", tab)
    assert "Local-first workflows keep every step" in page["article"]
    assert "Home" not in page["article"]  # the navigation is not the article
    assert page["metadata"]["article"]["title"] == "The Durable Engine"


def test_an_image_over_the_capture_limit_sends_its_address_and_says_why(chromium, he, site):
    (site.root / "huge.png").write_bytes(bytes.fromhex("89504e470d0a1a0a") + bytes(1_500_000))
    article = site.url("article.html")
    chromium.open(article)
    chromium.wait_connected()
    chromium.bg("self.hybrid.handleMessage({type: 'settings.set', settings: {maxCaptureBytes: 1000000}})")
    wait_for(lambda: chromium.bg("self.hybrid.state.templates.length") >= 2, what="templates listed")
    tab = {"id": chromium.tab_id(article), "url": article, "title": "The Durable Engine"}
    info = {"menuItemId": "image:e2e-echo", "srcUrl": site.url("huge.png"), "mediaType": "image",
            "pageUrl": article, "frameId": 0}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab})
    assert out["delivered"], out
    assert "Sent the image's address only" in out["notice"] and "over the" in out["notice"]
    he.wait_run(out["result"]["run_id"])
    page = _step(he.run_doc(out["result"]["run_id"]), "page")
    assert page["outputs"]["content"] == site.url("huge.png")
    assert "over the" in page["metadata"]["image_missing"]
