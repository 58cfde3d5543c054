"""Privacy in Chromium, with the real host: text a reader cannot see stays out of the capture,
a `never` site is refused from every entry point, a `local_only` page never reaches the
cloud provider, and what the popup shows as "will be sent" is what the provider receives.
(Firefox: test_firefox.py.)"""

from __future__ import annotations

import json
import re

import pytest

from e2e_world import EXT_ORIGIN, wait_for, wait_js

pytestmark = pytest.mark.e2e

VISIBLE = ["VISIBLE-ONE", "VISIBLE-TWO", "VISIBLE-THREE", "VISIBLE-FOUR", "VISIBLE-FIVE"]
HIDDEN_MARK = re.compile(r"HIDDEN-[A-Z]+")
CLOUD_TEMPLATE = """\
name: e2e-cloud
description: Summarise the page with a (fake) cloud model
redact: [email, phone, card]
steps:
  - id: page
    action: capture
  - id: text
    action: extract_text
    dependencies: [page]
    params:
      html: "{{ steps.page.outputs.content }}"
  - id: summary
    action: openai_chat
    dependencies: [text]
    params:
      model: gpt-4o-mini
      system: "You summarise web pages in three sentences."
      prompt: "Summarise {{ steps.page.outputs.title }}:\\n\\n{{ steps.text.outputs.text }}"
      max_tokens: 200
"""


def add_config(he, text: str) -> None:
    with (he.he_home / "config.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n" + text)


def cloud_world(he) -> None:
    """An OpenAI-compatible cloud provider (the fake, on loopback) and a template that uses it."""
    add_config(he, f'[providers.openai]\nbase_url = "{he.fake.base_url("openai")}"\napi_key = "sk-fake-openai"\n')
    (he.he_home / "templates" / "e2e-cloud.yaml").write_text(CLOUD_TEMPLATE, encoding="utf-8")


def prompt_of(request) -> str:
    return "\n".join(m["content"] for m in request.body["messages"])


def test_hidden_text_never_reaches_the_model_and_the_page_is_left_as_it_was(chromium, he, site):
    url = site.url("hidden.html")
    tab = chromium.open(url)
    before = tab.evaluate("document.documentElement.outerHTML")
    chromium.wait_connected()
    reply = chromium.bg("self.hybrid.handleMessage({type: 'capture.page', tabId: arg, template: 'e2e-digest'})",
                        chromium.tab_id(url))
    assert reply["ok"] and reply["result"]["delivered"], reply
    run_id = reply["result"]["result"]["run_id"]
    he.wait_run(run_id)
    (request,) = he.fake.requests_for("local")
    sent = prompt_of(request)
    assert [v for v in VISIBLE if v not in sent] == [], sent
    assert HIDDEN_MARK.findall(sent) == [], sent
    page = next(s for s in he.run_doc(run_id)["steps"] if s["id"] == "page")
    assert HIDDEN_MARK.findall(page["outputs"]["content"]) == []
    left_out = page["metadata"]["hidden_left_out"]
    assert left_out == {"elements": 8, "texts": 7}, left_out  # as many as the page hides each way
    assert tab.evaluate("document.documentElement.outerHTML") == before  # the live page was not touched


def test_a_never_site_is_refused_from_the_popup_shortcut_menu_and_the_host(chromium, he, site):
    add_config(he, '[[sites]]\nmatch = "127.0.0.1"\nrule = "never"\n')
    url = site.url("article.html")
    chromium.open(url)
    chromium.wait_connected()
    wait_for(lambda: chromium.bg("self.hybrid.state.sites.length") == 1, 20, what="the site rules")
    tab_id = chromium.tab_id(url)
    tab = {"id": tab_id, "url": url, "title": "The Durable Engine"}

    popup = chromium.popup(url)
    popup.wait_for_selector('#workflow option[value="e2e-digest"]', state="attached")
    wait_js(popup, "document.getElementById('estimate').dataset.code === 'site_never'")
    assert 'ruled "never"' in popup.inner_text("#estimate") and "127.0.0.1" in popup.inner_text("#estimate")
    popup.get_by_role("button", name="Send page to workflow").click()
    popup.wait_for_selector('#send-status[data-kind="error"]')
    assert 'ruled "never"' in popup.inner_text("#send-status")

    shortcut = chromium.bg("onCommand('send-page', arg)", tab)
    assert 'ruled "never"' in shortcut["error"], shortcut
    for info in ({"menuItemId": "page:e2e-echo", "pageUrl": url, "frameId": 0},
                 {"menuItemId": "selection:e2e-echo", "selectionText": "x", "pageUrl": url, "frameId": 0},
                 {"menuItemId": "link:e2e-echo", "linkUrl": "https://example.org/", "pageUrl": url, "frameId": 0}):
        out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab})
        assert 'ruled "never"' in out["error"], out
    # Past the extension (a stale rule list, another client): the host refuses it too.
    err = chromium.bg("self.hybrid.host.request('capture', {template: 'e2e-echo', page: {content: 'x', "
                      "source_url: arg}}).then(() => null, (e) => e.code)", url)
    assert err == "site_never"
    # One kept in the outbox from before the rule (nobody waits for it): refused, and not kept.
    chromium.bg("self.hybrid.host.outbox.add('e2e-echo', {content: 'secret page', source_url: arg})"
                ".then(() => self.hybrid.host.flushOutbox())", url)
    assert chromium.bg("self.hybrid.host.outbox.count()") == 0
    assert he.cli_json("runs", "--json")["runs"] == []


def test_a_local_only_page_never_reaches_the_cloud_provider(chromium, he, site):
    cloud_world(he)
    add_config(he, '[[sites]]\nmatch = "127.0.0.1"\nrule = "local_only"\n')
    url = site.url("article.html")
    chromium.open(url)
    popup = chromium.popup(url)
    popup.wait_for_selector('#connection[data-status="connected"]')
    popup.wait_for_selector('#workflow option[value="e2e-cloud"]', state="attached")
    popup.select_option("#workflow", "e2e-cloud")
    popup.wait_for_selector("#sent .sent-blocked", state="attached")
    assert "local_only" in popup.text_content("#sent .sent-blocked")
    popup.get_by_role("button", name="Send page to workflow").click()
    popup.wait_for_selector('#send-status[data-kind="ok"]')
    run_id = popup.get_attribute("#send-status", "data-run-id")
    doc = he.wait_run(run_id, "FAILED")
    summary = next(s for s in doc["steps"] if s["id"] == "summary")
    assert summary["error_code"] == "site_local_only" and "nothing was sent" in summary["error"]
    assert he.fake.requests_for("openai") == []


def test_a_strip_query_site_is_stored_and_sent_without_its_query_and_fragment(chromium, he, site):
    add_config(he, '[[sites]]\nmatch = "127.0.0.1"\nrule = "strip_query"\n')
    url = site.url("article.html") + "?session=s3cr3t-token&q=search+terms#pay"
    chromium.open(url)
    chromium.wait_connected()
    reply = chromium.bg("self.hybrid.handleMessage({type: 'capture.page', tabId: arg, template: 'e2e-echo'})",
                        chromium.tab_id(url))
    assert reply["ok"] and reply["result"]["delivered"], reply
    run_id = reply["result"]["result"]["run_id"]
    he.wait_run(run_id)
    doc = he.run_doc(run_id)
    page = next(s for s in doc["steps"] if s["id"] == "page")
    assert page["outputs"]["source_url"] == site.url("article.html")
    assert "s3cr3t-token" not in json.dumps(doc)


def test_what_the_popup_shows_as_will_be_sent_is_what_the_provider_receives_byte_for_byte(chromium, he, site):
    cloud_world(he)
    url = site.url("article.html")
    tab = chromium.open(url)
    tab.evaluate("""() => { const p = document.createElement('p');
      p.textContent = 'Contact jane.doe@example.org or +44 20 7946 0958 about card 4111 1111 1111 1111.';
      document.querySelector('article').append(p); }""")
    popup = chromium.popup(url)
    popup.wait_for_selector('#connection[data-status="connected"]')
    popup.wait_for_selector('#workflow option[value="e2e-cloud"]', state="attached")
    popup.select_option("#workflow", "e2e-cloud")
    popup.wait_for_selector('#sent .sent-step[data-step-id="summary"]', state="attached")
    shown_prompt = popup.evaluate("document.querySelector('#sent .sent-prompt').textContent")
    shown_system = popup.evaluate("document.querySelector('#sent .sent-system').textContent")
    summary_line = popup.text_content("#sent .sent-summary")
    assert "openai gpt-4o-mini (cloud)" in summary_line, summary_line
    assert "1 card, 1 email, 1 phone" in popup.text_content("#sent .sent-redacted")
    assert "[email]" in shown_prompt and "jane.doe" not in shown_prompt

    popup.get_by_role("button", name="Send page to workflow").click()
    popup.wait_for_selector('#send-status[data-kind="ok"]')
    run_id = popup.get_attribute("#send-status", "data-run-id")
    (request,) = he.fake.wait_requests(1, provider="openai")
    system, user = request.body["messages"]
    assert user["content"].encode("utf-8") == shown_prompt.encode("utf-8")
    assert system["content"].encode("utf-8") == shown_system.encode("utf-8")
    assert request.model == "gpt-4o-mini"

    he.wait_run(run_id)
    popup.locator(f'#run-list li[data-run-id="{run_id}"] button').click()
    popup.wait_for_selector('#detail-sent .sent-step[data-step-id="summary"]', state="attached")
    assert popup.evaluate("document.querySelector('#detail-sent .sent-prompt').textContent") == user["content"]
    assert "1 card, 1 email, 1 phone" in popup.text_content("#detail-sent .sent-redacted")


def test_options_shows_the_site_rules_and_adds_a_suggestion_to_config_toml(chromium, he):
    add_config(he, '[[sites]]\nmatch = "*.bank.example"\nrule = "never"\n')
    chromium.wait_connected()
    options = chromium.ctx.new_page()
    options.goto(f"{EXT_ORIGIN}/options/options.html")
    options.wait_for_selector('#sites-rules li[data-match="*.bank.example"][data-rule="never"]')
    options.locator("#sites details summary").click()
    options.get_by_role("button", name="Add *.internal as never").click()
    options.wait_for_selector('#sites-rules li[data-match="*.internal"]')
    options.fill("#sites-match", "a.*.bad")
    options.get_by_role("button", name="Add rule").click()
    wait_js(options, "document.getElementById('sites-status').textContent.startsWith('Not saved')")
    text = (he.he_home / "config.toml").read_text(encoding="utf-8")
    assert text.count("[[sites]]") == 2 and 'match = "*.internal"' in text and "[budgets]" in text
    assert json.loads(json.dumps(chromium.bg("self.hybrid.state.sites"))) == [
        {"match": "*.bank.example", "rule": "never"}, {"match": "*.internal", "rule": "never"}]


def test_text_hidden_by_template_transform_faint_colour_or_near_zero_opacity_stays_out(chromium, he, site):
    url = site.url("hidden-tricks.html")
    chromium.open(url)
    chromium.wait_connected()
    reply = chromium.bg("self.hybrid.handleMessage({type: 'capture.page', tabId: arg, template: 'e2e-digest'})",
                        chromium.tab_id(url))
    assert reply["ok"] and reply["result"]["delivered"], reply
    run_id = reply["result"]["result"]["run_id"]
    he.wait_run(run_id)
    page = next(s for s in he.run_doc(run_id)["steps"] if s["id"] == "page")
    assert HIDDEN_MARK.findall(page["outputs"]["content"]) == [], page["outputs"]["content"]
    (request,) = he.fake.requests_for("local")
    sent = prompt_of(request)
    assert [v for v in ("VISIBLE-ONE", "VISIBLE-TWO", "VISIBLE-THREE") if v not in sent] == [], sent
    assert HIDDEN_MARK.findall(sent) == [], sent


def test_a_blank_window_a_never_page_wrote_its_text_into_is_refused_as_that_page(chromium, he, site):
    """A bank's "print statement" window: about:blank in the address bar, the bank's origin and text inside."""
    add_config(he, '[[sites]]\nmatch = "127.0.0.1"\nrule = "never"\n')
    opener = chromium.open(site.url("article.html"))
    chromium.wait_connected()
    wait_for(lambda: chromium.bg("self.hybrid.state.sites.length") == 1, 20, what="the site rules")
    with opener.expect_popup() as popped:
        opener.evaluate("() => { const w = window.open('about:blank', '_blank');"
                        " w.document.title = 'Statement';"
                        " w.document.body.innerHTML = '<p>STATEMENT-SECRET 4111 1111 1111 1111</p>'; }")
    popped.value.wait_for_load_state()
    opener_id = chromium.tab_id(site.url("article.html"))
    (tab,) = [t for t in chromium.bg("chrome.tabs.query({})") if t.get("openerTabId") == opener_id]
    reply = chromium.bg("self.hybrid.handleMessage({type: 'capture.page', tabId: arg, template: 'e2e-echo'})", tab["id"])
    assert not reply.get("ok") and reply["error"]["code"] == "site_never", reply
    assert he.cli_json("runs", "--json")["runs"] == []
