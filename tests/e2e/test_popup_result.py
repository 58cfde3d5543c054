"""The popup in Chromium as a person reads a run: the result first, rendered as Markdown that
cannot run script or load anything; a failed run's errors; pre-flight before Send; a run
that is still going; the workflow it offers first."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from e2e_world import EXT_ORIGIN, TEMPLATES, shot, usd, wait_for
from test_chromium import run_row, send_from_popup, wait_js, wait_row_done

pytestmark = pytest.mark.e2e

# An answer written to do harm: every way of running script or reaching out that a renderer
# which parsed HTML, or trusted link and image URLs, would fall for.
HOSTILE = """# Summary &amp; <b>bold</b> &lt;tag&gt; &#x41;&#66;

<script>window.__pwned = 'script'</script>
<img src="http://evil.example/img.png" onerror="window.__pwned = 'img'">
<iframe src="http://evil.example/frame"></iframe>

Click [this](javascript:window.__pwned='link') or [that](data:text/html,<script>alert(1)</script>)
or [vb](vbscript:msgbox) or [relative](/steal) and ![pixel](http://evil.example/pixel.png "t").
A fine link: [docs](https://docs.example.org/page?a=1&b=2), and <https://auto.example.net/x>.

* one **strong** and *em* and `<code>`
  * nested <svg onload="window.__pwned='svg'">
    * deeper

> quote
>> deeper quote

| a | b |
|---|---|
| <u>x</u> | [t](javascript:1) |

```html
<script>window.__pwned = 'fence'</script>
```
""" + ">" * 3000 + " deep\n\n" + "* x\n" + "".join("  " * i + "* n\n" for i in range(1, 400)) \
    + "[" * 2000 + "]" * 2000 + "\n\n" + "**" * 3000 + "\n"

PREFLIGHT_TEMPLATE = """\
name: e2e-cloud
description: Summarise with a cloud model (needs an OpenAI key)
steps:
  - id: page
    action: capture
  - id: summary
    action: openai_chat
    dependencies: [page]
    params:
      model: gpt-4o-mini
      prompt: "Summarise: {{ steps.page.outputs.content }}"
      max_tokens: 100
"""

OUTGROWN_TEMPLATE = """\
name: e2e-outgrown
description: A long local answer summarised by a cloud model
steps:
  - id: page
    action: capture
  - id: notes
    action: local_chat
    dependencies: [page]
    params: {model: e2e-model, prompt: "Notes: {{ steps.page.outputs.content }}", max_tokens: 200000}
  - id: summary
    action: openai_chat
    dependencies: [notes]
    params: {model: gpt-4o-mini, prompt: "Summarise: {{ steps.notes.outputs.text }}", max_tokens: 100}
"""

TWO_MODELS = """\
name: e2e-two
description: Two summaries side by side
steps:
  - id: page
    action: capture
  - id: first
    action: local_chat
    dependencies: [page]
    params: {model: e2e-model, retries: 0, prompt: "One: {{ steps.page.outputs.content }}", max_tokens: 50}
  - id: second
    action: local_chat
    dependencies: [page]
    params: {model: e2e-model, retries: 0, prompt: "Two: {{ steps.page.outputs.content }}", max_tokens: 50}
  - id: join
    action: template
    dependencies: [first, second]
    params: {template: "{{ steps.first.outputs.text }} / {{ steps.second.outputs.text }}"}
"""


def open_detail(popup, run_id):
    run_row(popup, run_id).locator("button").click()
    popup.wait_for_selector("#detail:not([hidden])")


def record_requests(chromium):
    seen: list[str] = []
    chromium.ctx.on("request", lambda r: seen.append(r.url))
    return seen


def both_schemes(popup, name):
    """Screenshots in light and dark; in each, no text below 4.5:1 contrast and nothing wider than the popup."""
    from test_screens import assert_no_horizontal_overflow, assert_readable  # test_screens imports test_chromium

    for scheme in ("light", "dark"):
        popup.emulate_media(color_scheme=scheme)
        shot(popup, f"popup-{scheme}-{name}")
        assert_readable(popup, f"{name} ({scheme})")
        assert_no_horizontal_overflow(popup, f"{name} ({scheme})")
    popup.emulate_media(color_scheme="light")


def test_hostile_output_renders_as_text_with_no_script_run_and_no_remote_request(chromium, he, site):
    he.fake.script("local", text=HOSTILE)
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-digest")
    wait_row_done(popup, run_id)
    requests = record_requests(chromium)
    errors: list[str] = []
    popup.on("pageerror", lambda e: errors.append(str(e)))
    popup.on("dialog", lambda d: (errors.append(f"dialog {d.message}"), d.dismiss()))
    open_detail(popup, run_id)
    popup.wait_for_selector("#copy-output:not([disabled])")
    out = popup.locator("#output")
    assert popup.evaluate("window.__pwned") is None
    assert out.locator("script, img, iframe, svg, u, b, object, embed, style").count() == 0
    hrefs = out.locator("a").evaluate_all("as => as.map(a => [a.getAttribute('href'), a.rel, a.target])")
    # Links only to http(s) URLs (a URL written in the text becomes one too), none to
    # javascript:, data:, vbscript: or a relative address, each opened apart from this page.
    assert {h for h, _, _ in hrefs} == {"https://docs.example.org/page?a=1&b=2", "https://auto.example.net/x",
                                        "http://evil.example/pixel.png", "http://evil.example/img.png",
                                        "http://evil.example/frame"}
    assert all(rel == "noopener noreferrer" and target == "_blank" for _, rel, target in hrefs)
    text = out.inner_text()
    assert "<script>window.__pwned = 'script'</script>" in text  # tags read as text
    assert "Summary & <b>bold</b> <tag> AB" == out.locator("h3").first.inner_text()
    assert out.locator("ul ul ul").count() >= 1 and out.locator("blockquote blockquote").count() >= 1
    assert out.locator("table td").count() == 2
    assert out.locator("pre code").first.inner_text() == "<script>window.__pwned = 'fence'</script>"
    remote = [u for u in requests if not u.startswith(EXT_ORIGIN)]
    assert remote == [] and errors == []
    both_schemes(popup, "detail-hostile")


def test_result_opens_in_a_tab_and_saves_as_a_markdown_file(chromium, he, site):
    answer = "## Points\n\n1. first\n2. second with [a link](https://example.org/)\n"
    he.fake.script("local", text=answer)
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-digest")
    wait_row_done(popup, run_id)
    open_detail(popup, run_id)
    popup.wait_for_selector("#save-output:not([disabled])")
    # Result first: the rendered answer comes before the steps in the page.
    assert popup.evaluate("document.getElementById('result').compareDocumentPosition("
                          "document.getElementById('steps-box')) & Node.DOCUMENT_POSITION_FOLLOWING") > 0
    assert popup.locator("#output ol li").count() == 2
    assert "finished" in popup.inner_text("#detail-meta")
    assert popup.inner_text("#detail-link").startswith("127.0.0.1")
    both_schemes(popup, "detail-result")
    with popup.expect_download() as dl:
        popup.click("#save-output")
    download = dl.value
    assert download.suggested_filename in ("The Durable Engine.md", "e2e-digest.md")
    assert open(download.path(), encoding="utf-8").read() == answer
    with chromium.ctx.expect_page() as opened:
        popup.click("#open-output")
    tab = opened.value
    assert tab.url.startswith(f"{EXT_ORIGIN}/result/result.html#")
    tab.wait_for_selector("body[data-ready='true']")
    assert tab.locator("#output h4").inner_text() == "Points"
    assert tab.locator("#output a").get_attribute("href") == "https://example.org/"
    tab.set_viewport_size({"width": 900, "height": 600})
    shot(tab, "result-tab-light")


def test_a_failed_run_shows_every_error_first_and_no_result(chromium, he, site):
    (he.he_home / "templates" / "e2e-two.yaml").write_text(TWO_MODELS, encoding="utf-8")
    he.fake.script("local", status=400, error="first model refused", times=1)
    he.fake.script("local", status=400, error="second model refused", times=1)
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-two")
    he.wait_run(run_id, "FAILED")
    open_detail(popup, run_id)
    popup.wait_for_selector("#detail-errors:not([hidden])")
    errors = popup.locator("#detail-error-list li").all_inner_texts()
    assert len([e for e in errors if e.startswith(("first:", "second:"))]) == 2, errors
    assert popup.locator("#result").is_hidden()
    assert popup.evaluate("document.getElementById('detail-errors').compareDocumentPosition("
                          "document.getElementById('steps-box')) & Node.DOCUMENT_POSITION_FOLLOWING") > 0
    both_schemes(popup, "detail-failed")


def test_preflight_names_the_missing_key_with_its_fix_and_turns_green_once_it_is_set(chromium, he, site):
    (he.he_home / "templates" / "e2e-cloud.yaml").write_text(PREFLIGHT_TEMPLATE, encoding="utf-8")
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector('#workflow option[value="e2e-cloud"]', state="attached")
    popup.select_option("#workflow", "e2e-cloud")
    item = popup.locator('#preflight li[data-step-id="summary"]')
    item.wait_for()
    assert item.get_attribute("data-ok") == "false"
    assert "No OpenAI key: add it in Settings" in item.inner_text()
    assert item.locator("a").get_attribute("href") == "../options/options.html"
    both_schemes(popup, "preflight-missing-key")
    subprocess.run([sys.executable, "-m", "hybrid_engine", "keys", "set", "openai"], input="sk-e2e-preflight-0123\n",
                   text=True, env=he.env(), check=True, capture_output=True)
    popup.select_option("#workflow", "e2e-digest")
    popup.select_option("#workflow", "e2e-cloud")
    wait_js(popup, "document.querySelector('#preflight li[data-step-id=\"summary\"]')?.dataset.ok === 'true'")
    assert popup.get_attribute("#estimate", "data-ok") == "true"
    both_schemes(popup, "preflight-ok")


def test_popup_says_when_a_step_may_outgrow_its_window_once_the_answers_it_reads_are_in(chromium, he, site):
    (he.he_home / "templates" / "e2e-outgrown.yaml").write_text(OUTGROWN_TEMPLATE, encoding="utf-8")
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector('#workflow option[value="e2e-outgrown"]', state="attached")
    popup.select_option("#workflow", "e2e-outgrown")
    warning = popup.locator('#preflight li[data-step-id="summary"] .step-warning')
    warning.wait_for()
    assert "over the 128,000-token context window of gpt-4o-mini" in warning.inner_text()
    assert popup.locator('#preflight li[data-step-id="notes"] .step-warning').count() == 0
    assert he.fake.requests_for("local") == []
    both_schemes(popup, "preflight-warning")


def test_preflight_flags_a_run_over_its_budget_before_it_is_sent(chromium, he, site):
    (he.he_home / "templates" / "e2e-tight.yaml").write_text(
        TEMPLATES["e2e-digest"].replace("name: e2e-digest", "name: e2e-tight") + "budget_usd: 0.0001\n",
        encoding="utf-8")
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector('#workflow option[value="e2e-tight"]', state="attached")
    popup.select_option("#workflow", "e2e-tight")
    item = popup.locator('#preflight li[data-step-id="summary"][data-ok="false"]')
    item.wait_for()
    assert "over its $0.0001 run budget" in item.inner_text()
    assert popup.inner_text("#send-button") == "Send anyway (will stop at its run budget)"
    assert he.fake.requests_for("local") == []
    both_schemes(popup, "preflight-over-budget")


def test_a_running_run_shows_elapsed_time_and_expected_cost_then_its_final_figure(chromium, he, site):
    he.fake.hold()
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-digest")
    he.fake.wait_requests(1, provider="local")
    row = run_row(popup, run_id)
    popup.wait_for_selector(f'#run-list li[data-run-id="{run_id}"][data-status="RUNNING"]')
    live = row.locator(".live")
    wait_js(popup, f"document.querySelector('#run-list li[data-run-id=\"{run_id}\"] .live').textContent.includes('≈ $')")
    assert row.locator(".cost").is_hidden() and row.locator(".tokens").is_hidden()
    assert " s" in live.inner_text()
    both_schemes(popup, "running")
    open_detail(popup, run_id)
    wait_js(popup, "document.getElementById('detail-live').textContent.includes('summary: expected $')")
    assert popup.inner_text("#detail-live").startswith("Running ")
    # The range is one unit: the line may wrap before it, never inside it.
    assert "\u00a0–\u00a0$" in popup.evaluate("document.getElementById('detail-live').textContent")
    both_schemes(popup, "detail-running")
    he.fake.release()
    popup.keyboard.press("Escape")
    wait_row_done(popup, run_id)
    cost = he.run_doc(run_id)["metrics"]["total_cost"]
    assert row.locator(".cost").inner_text() == usd(cost) and live.is_hidden()


def test_a_fresh_install_offers_page_digest_and_then_the_workflow_used_last(chromium, he, site):
    (he.he_home / "templates" / "page-digest.yaml").write_text(
        TEMPLATES["e2e-digest"].replace("name: e2e-digest", "name: page-digest"), encoding="utf-8")
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector('#workflow option[value="page-digest"]', state="attached")
    assert popup.input_value("#workflow") == "page-digest"  # not e2e-digest, alphabetically first
    popup.select_option("#workflow", "e2e-echo")
    wait_for(lambda: chromium.bg("chrome.storage.local.get('settings')")["settings"].get("lastWorkflow") == "e2e-echo",
             10, 0.05, "the choice to be kept")
    popup.close()
    again = chromium.popup(article)
    again.wait_for_selector('#workflow option[value="page-digest"]', state="attached")
    assert again.input_value("#workflow") == "e2e-echo"


def test_the_popup_shows_the_estimate_started_as_it_opened_without_asking_the_host_again(chromium, he, site):
    article = site.url("article.html")
    chromium.open(article)
    chromium.wait_connected()
    chromium.bg("(() => { const h = self.hybrid.host; const real = h.request.bind(h); self.__asked = [];"
                " h.request = (type, ...rest) => { self.__asked.push(type); return real(type, ...rest); }; })()")
    popup = chromium.popup(article)
    wait_js(popup, "performance.getEntriesByName('popup:estimate-shown').length > 0")
    assert popup.evaluate("performance.getEntriesByName('popup:early').length") == 1
    assert chromium.bg("self.__asked.filter((t) => t === 'estimate').length") == 1
    assert chromium.bg("self.hybrid.early.entry") is None  # taken by the popup's own ask
    assert "prompt tokens" in popup.inner_text("#estimate-detail")


ALREADY = [{"run_id": "r-earlier", "workflow": "e2e-digest", "status": "COMPLETED",
            "finished_at": "2026-01-02T03:04:05Z", "cost": 0.000127, "cost_state": "exact",
            "page": {"title": "The Durable Engine", "url": "http://x/", "site": "x", "favicon": None}}]


def test_already_sent_card_offers_reuse_and_capture_carries_the_choice(chromium, he, site):
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.ctx.new_page()
    popup.set_viewport_size({"width": 400, "height": 640})
    # The host's runs.for_url, answered in the popup's own messaging (the shape the host gives).
    popup.add_init_script(f"""(() => {{
      const real = chrome.runtime.sendMessage.bind(chrome.runtime);
      window.__sent = [];
      chrome.runtime.sendMessage = (msg) => {{
        window.__sent.push(msg);
        if (msg.type === 'runs.for_url') return Promise.resolve({{ok: true, result: {{runs: {json.dumps(ALREADY)}}}}});
        return real(msg);
      }};
    }})()""")
    popup.goto(f"{EXT_ORIGIN}/popup/popup.html?tab={chromium.tab_id(article)}")
    popup.wait_for_selector("#already:not([hidden])")
    assert "e2e-digest · completed" in popup.inner_text("#already-list")
    assert "$0.00013" in popup.inner_text("#already-list")
    both_schemes(popup, "already-sent")
    popup.check('input[name="reuse"][value="fresh"]')
    popup.get_by_role("button", name="Send page to workflow").click()
    popup.wait_for_selector('#send-status[data-kind="ok"]')
    sent = popup.evaluate("window.__sent.filter(m => m.type === 'capture.page')")
    assert sent[-1]["reuse"] == "fresh"


def test_reuse_is_offered_only_for_a_workflow_that_already_did_the_page(chromium, he, site):
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.ctx.new_page()
    popup.add_init_script(f"""(() => {{
      const real = chrome.runtime.sendMessage.bind(chrome.runtime);
      chrome.runtime.sendMessage = (msg) => msg.type === 'runs.for_url'
        ? Promise.resolve({{ok: true, result: {{runs: {json.dumps(ALREADY)}}}}}) : real(msg);
    }})()""")
    popup.goto(f"{EXT_ORIGIN}/popup/popup.html?tab={chromium.tab_id(article)}")
    popup.wait_for_selector("#already:not([hidden])")
    popup.select_option("#workflow", "e2e-echo")  # never given this page: Send would be a new, paid run
    popup.wait_for_selector("#reuse-choice", state="hidden")
    assert "e2e-digest · completed" in popup.inner_text("#already-list")  # the earlier result is still listed
    popup.select_option("#workflow", "e2e-digest")
    popup.wait_for_selector("#reuse-choice", state="visible")


def test_no_already_sent_card_when_the_host_does_not_know_the_question(chromium, he, site):
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector("#estimate[data-ok]")
    wait_js(popup, "performance.getEntriesByName('popup:estimate-shown').length > 0")
    assert popup.locator("#already").is_hidden()
    assert popup.locator("#send-status").inner_text() == ""
    assert popup.inner_text("#runs-empty") == "No runs yet. Send a page to start one."
    both_schemes(popup, "empty")
