"""The extension in Chromium: the popup, the context menus, a host that dies or is
missing, and big pages and outputs, against the real host and a fake model on loopback."""

from __future__ import annotations

import base64
import json
import os
import signal
import statistics

import pytest

from e2e_world import (ARTIFACTS, EXT_ORIGIN, GUARD_MS, INPUT_PER_MTOK, MODEL, OUTPUT_PER_MTOK, PNG_1PX, TEMPLATES, sha256, shot,
                      usd, wait_for, wait_js)

pytestmark = pytest.mark.e2e

SEND = "Send page to workflow"

# Records every text the connection pill shows, so a short "Reconnecting…" is not missed.
WATCH_CONNECTION = """() => {
  window.__conn = [document.getElementById('connection').textContent];
  new MutationObserver(() => window.__conn.push(document.getElementById('connection').textContent))
    .observe(document.getElementById('connection'), {childList: true, characterData: true, subtree: true});
}"""


def popup_mark(popup, moment):
    """The popup's last User Timing mark for `moment`: {"at": ms since it opened, "detail": ...}, or None."""
    return popup.evaluate("""(m) => { const e = performance.getEntriesByName(`popup:${m}`).at(-1);
      return e ? { at: e.startTime, detail: e.detail } : null; }""", moment)


def run_row(popup, run_id):
    return popup.locator(f'#run-list li[data-run-id="{run_id}"]')


def wait_row_done(popup, run_id, timeout_ms=GUARD_MS):
    popup.wait_for_selector(f'#run-list li[data-run-id="{run_id}"][data-status="COMPLETED"] .progress[data-percent="100"]',
                            state="attached", timeout=max(timeout_ms, GUARD_MS))


def send_from_popup(popup, template):
    popup.wait_for_selector('#connection[data-status="connected"]')
    popup.wait_for_selector(f'#workflow option[value="{template}"]', state="attached")
    popup.select_option("#workflow", template)
    wait_js(popup, "document.getElementById('estimate-cost').textContent.startsWith('Estimate:')")
    popup.click("#send-button")  # "Send anyway" when pre-flight says it may pass its run budget
    popup.wait_for_selector('#send-status[data-kind="ok"]')
    return popup.get_attribute("#send-status", "data-run-id")


def test_popup_sends_page_and_shows_progress_and_cost(chromium, he, site):
    he.fake.hold()  # the model call is answered only once the run has been seen in progress
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector('#connection[data-status="connected"]')
    popup.wait_for_selector('#workflow option[value="e2e-digest"]', state="attached")
    popup.select_option("#workflow", "e2e-digest")
    wait_js(popup, "document.getElementById('estimate-cost').textContent.startsWith('Estimate:')")
    estimate = popup.inner_text("#estimate")
    assert "prompt tokens" in estimate and "$" in estimate, estimate
    assert popup.get_by_role("button", name=SEND).is_enabled()

    popup.get_by_role("button", name=SEND).click()
    popup.wait_for_selector('#send-status[data-kind="ok"]')
    run_id = popup.get_attribute("#send-status", "data-run-id")
    row = run_row(popup, run_id)
    row.wait_for()
    # Named by its page when the host gives runs their page, else by the workflow.
    assert row.locator(".name").inner_text() in ("The Durable Engine", "e2e-digest")
    he.fake.wait_requests(1, provider="local")
    popup.wait_for_selector(f'#run-list li[data-run-id="{run_id}"][data-status="RUNNING"]')
    wait_for(lambda: chromium.bg("chrome.action.getBadgeText({})") == "1", 20, what="the badge to count the run")
    shot(popup, "popup-light-running")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-running")
    popup.emulate_media(color_scheme="light")
    he.fake.release()

    wait_row_done(popup, run_id)
    doc = he.run_doc(run_id)
    assert doc["status"] == "COMPLETED"
    cost = doc["metrics"]["total_cost"]
    step = next(s for s in doc["steps"] if s["id"] == "summary")
    expected = (step["execution_metrics"]["prompt_tokens"] * INPUT_PER_MTOK
                + step["execution_metrics"]["completion_tokens"] * OUTPUT_PER_MTOK) / 1e6
    assert cost == pytest.approx(expected) and cost > 0
    assert doc["cost_breakdown"] == {MODEL: pytest.approx(cost)}
    assert row.locator(".cost").inner_text() == usd(cost)
    assert float(row.locator(".cost").get_attribute("data-cost")) == pytest.approx(cost, rel=1e-12)
    assert row.locator(".steps-done").inner_text() == "3/3 steps"
    assert row.locator(".tokens").inner_text() == f"{doc['metrics']['total_tokens']:,} tok"
    assert row.locator(".progress").get_attribute("aria-valuenow") == "3"
    # The capture slot got the page as the page itself serialises it.
    page_step = next(s for s in doc["steps"] if s["id"] == "page")
    assert page_step["outputs"]["source_url"] == site.url("article.html")
    assert page_step["outputs"]["title"] == "The Durable Engine"
    assert "Local-first workflows keep every step" in page_step["outputs"]["content"]

    shot(popup, "popup-light-done")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-done")
    popup.emulate_media(color_scheme="light")

    # Spend: today's total includes this run, against the daily budget in config.toml.
    wait_js(popup, f"Number(document.getElementById('spend-text').dataset.today) >= {cost * 0.999}")
    assert "of $0.50 daily budget" in popup.inner_text("#spend-text")

    # Detail: every step, the final output, copy.
    row.locator("button").click()
    popup.wait_for_selector("#detail:not([hidden])")
    popup.wait_for_selector("#copy-output:not([disabled])")
    rows = popup.locator("#detail-steps tr")
    assert rows.count() == 3
    summary_row = popup.locator('#detail-steps tr[data-step-id="summary"]')
    assert "DONE" in summary_row.inner_text().upper()
    assert usd(step["execution_metrics"]["cost"]) in summary_row.inner_text()
    assert popup.inner_text("#output") == step["outputs"]["text"]
    shot(popup, "popup-light-detail")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-detail")
    # Keyboard: Escape goes back and focus returns to the run.
    popup.keyboard.press("Escape")
    popup.wait_for_selector("#list-view:not([hidden])")
    assert popup.evaluate("document.activeElement.closest('li')?.dataset.runId") == run_id

    # The badge counted the run while it ran and shows nothing now; a notification said it finished.
    assert chromium.bg("chrome.action.getBadgeText({})") == ""
    assert f"run:{run_id}" in chromium.bg("chrome.notifications.getAll()")


def test_options_page_says_where_each_key_came_from_and_what_is_wrong_with_the_settings(chromium, he):
    stored = "sk-e2e-stored-key-0123456789"
    keys = he.he_home / "keys.json"
    keys.write_text(json.dumps({"deepseek": stored}), encoding="utf-8")
    keys.chmod(0o644)  # readable by others: a warning
    with (he.he_home / "config.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n[executor]\nconcurrency = 0\n")  # out of range: an error naming file, key and range
    chromium.wait_connected()
    options = chromium.ctx.new_page()
    options.goto(f"{EXT_ORIGIN}/options/options.html")
    wait_js(options, "document.querySelectorAll('#providers li').length === 4")
    providers = options.inner_text("#providers").splitlines()
    assert f"deepseek: key set (from {keys})" in providers, providers
    assert "openai: no key" in providers
    assert "gemini: no key" in providers  # Debian's Chromium exports its own GOOGLE_API_KEY to the host
    wait_js(options, "!!document.getElementById('settings-problems')?.textContent")
    problems = options.inner_text("#settings-problems")
    assert "[executor] concurrency" in problems and ">= 1" in problems and "config.toml" in problems
    assert "chmod 600" in problems and str(keys) in problems
    assert stored[:12] not in options.content()


def test_options_page_and_keyboard_shortcut_use_the_default_workflow(chromium, he, site):
    chromium.wait_connected()
    options = chromium.ctx.new_page()
    options.set_viewport_size({"width": 720, "height": 900})
    options.goto(f"{EXT_ORIGIN}/options/options.html")
    options.wait_for_selector('#default-workflow option[value="e2e-echo"]', state="attached")
    wait_js(options, "document.getElementById('templates-folder').textContent.endsWith('templates')")
    assert options.inner_text("#templates-folder") == str(he.he_home / "templates")
    assert options.inner_text("#host-version").startswith("0.1.0")
    # Which providers have a key (the host's `config` message; never the key itself).
    wait_js(options, "document.querySelectorAll('#providers li').length === 4")
    providers = options.inner_text("#providers").splitlines()
    assert sorted(line.split(":")[0] for line in providers) == ["deepseek", "gemini", "local", "openai"]
    assert all(line.endswith(("key set", "no key")) or "key set (from " in line for line in providers)
    # The doctor, run from the page (the host's `doctor` message).
    options.click("#run-doctor")
    wait_js(options, "!document.getElementById('doctor-output').textContent.startsWith('Running')")
    report = options.inner_text("#doctor-output")
    assert report == "No problems found." or "Fix:" in report, report
    assert str(he.he_home / "logs") in options.inner_text("#log-file")
    options.select_option("#default-workflow", "e2e-echo")
    options.get_by_label("Notify me when a run finishes or fails").uncheck()
    wait_for(lambda: chromium.bg("chrome.storage.local.get('settings')")["settings"] ==
             {"defaultTemplate": "e2e-echo", "notifications": False, "maxCaptureBytes": 8 * 1024 * 1024},
             5, what="the settings to be saved")
    shot(options, "options-light")
    options.emulate_media(color_scheme="dark")
    shot(options, "options-dark")

    # The shortcut ("send page to the default workflow"): its handler, as Chromium calls it.
    article = site.url("article.html")
    chromium.open(article)
    tab = {"id": chromium.tab_id(article), "url": article, "title": "The Durable Engine"}
    out = chromium.bg("onCommand('send-page', arg)", tab)
    assert out["delivered"], out
    doc = he.wait_run(out["result"]["run_id"])
    assert doc["template"] == "e2e-echo"
    shortcut = chromium.bg("chrome.commands.getAll()")
    assert any(c["name"] == "send-page" and c["description"] == "Send page to the default workflow" for c in shortcut)


def test_popup_open_to_runs_shown_and_click_to_run_created_for_1mb_page(chromium, he, site):
    """Benchmarks for the issue note; printed, and saved to artifacts/extension_timing.json."""
    big = site.url("big.html")
    tab = chromium.open(big)
    serialised = tab.evaluate("(document.doctype ? `<!DOCTYPE ${document.doctype.name}>\\n` : '')"
                              " + document.documentElement.outerHTML")
    assert len(serialised.encode()) > 1024 * 1024
    chromium.wait_connected()
    clicks = []
    run_ids = []
    for i in range(3):
        popup = chromium.popup(big)
        run_id = send_from_popup(popup, "e2e-echo")
        clicked, created = popup_mark(popup, "send-clicked"), popup_mark(popup, "run-created")
        clicks.append({"click_to_run_ms": created["at"] - clicked["at"], **created["detail"]})
        run_ids.append(run_id)
        popup.close()
    for run_id in run_ids:
        he.wait_run(run_id)
    # Without the popup's estimate first: the capture (executeScript of 1.2 MB) counts too.
    tab_id = chromium.tab_id(big)
    cold = []
    for i in range(3):
        chromium.bg("self.hybrid.state.prepared.clear()")
        reply = chromium.bg("self.hybrid.handleMessage({type: 'capture.page', tabId: arg, template: 'e2e-echo'})", tab_id)
        assert reply["ok"] and reply["result"]["delivered"], reply
        cold.append(reply["result"])
        run_ids.append(reply["result"]["result"]["run_id"])
    # The long page made the round trip intact: stored byte for byte as the page serialises.
    doc = he.run_doc(run_ids[0])
    content = next(s for s in doc["steps"] if s["id"] == "page")["outputs"]["content"]
    assert sha256(content) == sha256(serialised)

    opens = []
    for i in range(5):
        popup = chromium.ctx.new_page()
        popup.goto(f"{EXT_ORIGIN}/popup/popup.html")
        popup.wait_for_selector(f'#run-list li[data-run-id="{run_ids[0]}"]')
        wait_js(popup, "performance.getEntriesByName('popup:runs-shown').length > 0")
        cached = popup_mark(popup, "runs-shown-cached")
        opens.append({"runs_shown_ms": popup_mark(popup, "runs-shown")["at"],
                      "cached_runs_shown_ms": cached and cached["at"]})
        popup.close()
    result = {
        "page_bytes": len(serialised.encode()),
        "click_to_run_created_ms": [round(c["click_to_run_ms"], 1) for c in clicks],
        "click_to_run_created_median_ms": round(statistics.median(c["click_to_run_ms"] for c in clicks), 1),
        "capture_ms": [round(c["captureMs"], 1) for c in clicks],
        "send_ms": [round(c["sendMs"], 1) for c in clicks],
        "reused_estimate_capture": [c["reused"] for c in clicks],
        "cold_capture_and_send_ms": [round(c["totalMs"], 1) for c in cold],
        "cold_capture_ms": [round(c["captureMs"], 1) for c in cold],
        "cold_send_ms": [round(c["sendMs"], 1) for c in cold],
        "popup_open_to_runs_shown_ms": [round(o["runs_shown_ms"], 1) for o in opens],
        "popup_open_to_runs_shown_median_ms": round(statistics.median(o["runs_shown_ms"] for o in opens), 1),
        "popup_open_to_cached_runs_shown_ms": [round(o["cached_runs_shown_ms"] or -1, 1) for o in opens],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "extension_timing.json").write_text(json.dumps(result, indent=2))
    print("\nextension timing:", json.dumps(result, indent=2))


def test_context_menu_captures_selection_link_and_image(chromium, he, site):
    article = site.url("article.html")
    tab = chromium.open(article)
    chromium.wait_connected()
    # One item per template under each context; update() without lastError proves it exists.
    wait_for(lambda: chromium.bg("self.hybrid.state.templates.length") >= 2, what="templates listed")
    # The menus are rebuilt after the template list arrives: waited for, item by item.
    for item in ("page:e2e-echo", "selection:e2e-echo", "link:e2e-digest", "image:e2e-echo"):
        wait_for(lambda item=item: chromium.bg(
            f"new Promise(r => chrome.contextMenus.update({json.dumps(item)}, {{}}, "
            "() => r(chrome.runtime.lastError ? chrome.runtime.lastError.message : null)))") is None,
            what=f"the context menu item {item}")
    tab_id = chromium.tab_id(article)
    tab_info = {"id": tab_id, "url": article, "title": "The Durable Engine"}

    selection = tab.evaluate("""() => {
      const r = document.createRange(); r.selectNodeContents(document.getElementById('lead'));
      getSelection().removeAllRanges(); getSelection().addRange(r); return getSelection().toString(); }""")
    assert "\n" in selection  # the page's selection keeps its line break; the menu's would not
    info = {"menuItemId": "selection:e2e-echo", "selectionText": " ".join(selection.split()),
            "pageUrl": article, "frameId": 0, "editable": False}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab_info})
    assert out["delivered"], out
    sel_run = out["result"]["run_id"]

    link_url = site.url("target.html")
    info = {"menuItemId": "link:e2e-echo", "linkUrl": link_url, "pageUrl": article, "frameId": 0}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab_info})
    link_run = out["result"]["run_id"]

    img_url = site.url("diagram.png")
    info = {"menuItemId": "image:e2e-echo", "srcUrl": img_url, "mediaType": "image", "pageUrl": article, "frameId": 0}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab_info})
    img_run = out["result"]["run_id"]

    # A page the browser does not let extensions read still sends its address and title.
    info = {"menuItemId": "page:e2e-echo", "pageUrl": "chrome://version/", "frameId": 0}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)",
                      {"info": info, "tab": {"id": tab_id, "url": "chrome://version/", "title": "About Version"}})
    browser_run = out["result"]["run_id"]
    assert "browser pages" in out["notice"], out

    def capture_of(run_id):
        doc = he.wait_run(run_id)
        doc = he.run_doc(run_id)
        page = next(s for s in doc["steps"] if s["id"] == "page")
        echo = next(s for s in doc["steps"] if s["id"] == "echo")
        assert echo["outputs"]["text"] == page["outputs"]["content"]
        return page

    page = capture_of(sel_run)
    assert page["outputs"]["content"] == selection
    assert page["outputs"]["selection"] == selection
    assert page["outputs"]["source_url"] == article
    assert page["outputs"]["content_type"] == "text/plain"
    assert page["metadata"]["kind"] == "selection"

    page = capture_of(link_run)
    assert page["outputs"]["content"] == link_url
    assert page["outputs"]["link_url"] == link_url
    assert page["outputs"]["link_text"] == "the full specification"
    assert page["metadata"]["kind"] == "link"

    page = capture_of(img_run)
    assert base64.b64decode(page["outputs"]["content"]) == PNG_1PX  # the bytes, for a vision model
    assert page["outputs"]["content_type"] == "image/png"
    assert page["outputs"]["image_url"] == img_url
    assert page["outputs"]["image_alt"] == "A diagram of the step graph"
    assert page["metadata"]["kind"] == "image"

    page = capture_of(browser_run)
    assert page["outputs"]["content"] == "About Version\nchrome://version/"
    assert page["outputs"]["source_url"] == "chrome://version/"
    assert "browser pages" in page["metadata"]["content_missing"]

    # A template the host does not know: an error, not a capture queued forever.
    info = {"menuItemId": "page:no-such-workflow", "pageUrl": article, "frameId": 0}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)", {"info": info, "tab": tab_info})
    assert "no-such-workflow" in out["error"], out
    assert chromium.bg("self.hybrid.host.outbox.list()") == []

    # Over the size cap: the page's text goes instead of its HTML, and the notice says so.
    chromium.bg("self.hybrid.handleMessage({type: 'settings.set', settings: {maxCaptureBytes: 1000000}})")
    big = site.url("big.html")
    big_tab = chromium.open(big)
    text = big_tab.evaluate("document.body.innerText")
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)",
                      {"info": {"menuItemId": "page:e2e-echo", "pageUrl": big, "frameId": 0},
                       "tab": {"id": chromium.tab_id(big), "url": big, "title": "A long page"}})
    assert "over the 976.6 KB limit: sent the first 976.6 KB of its text instead" in out["notice"], out
    page = capture_of(out["result"]["run_id"])
    assert page["outputs"]["content_type"] == "text/plain"
    assert text.startswith(page["outputs"]["content"])
    assert 900_000 < len(page["outputs"]["content"].encode()) <= 1_000_000
    assert page["metadata"]["size_cap"]["truncated"] is True
    assert page["metadata"]["size_cap"]["html_bytes"] > 1_000_000

    # A new template file: the host says templates.changed and the menus follow.
    (he.he_home / "templates" / "e2e-new.yaml").write_text(
        TEMPLATES["e2e-echo"].replace("e2e-echo", "e2e-new"), encoding="utf-8")
    exists = ("new Promise(r => chrome.contextMenus.update('selection:e2e-new', {}, "
              "() => r(!chrome.runtime.lastError)))")
    wait_for(lambda: chromium.bg(exists), 15, 0.2, "a menu item for the new template")


def test_host_killed_during_a_call_popup_reconnects_and_the_call_is_not_repeated(chromium, he, site):
    he.fake.hold()  # the call stays in flight until the popup has reconnected
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-digest")
    popup.evaluate(WATCH_CONNECTION)
    he.fake.wait_requests(1, provider="local")
    first = he.host_pids()[-1]
    os.kill(first, signal.SIGKILL)
    wait_js(popup, "window.__conn.some(t => t.startsWith('Reconnecting'))")
    popup.wait_for_selector('#connection[data-status="connected"]')
    assert he.fake.requests_for("local")[0].ended is None  # still held: the kill cut nothing short
    he.fake.release()
    wait_row_done(popup, run_id)
    seen = popup.evaluate("window.__conn")
    assert any(t.startswith("Reconnect") for t in seen), seen
    pids = he.host_pids()
    assert len(pids) >= 2 and pids[-1] != first
    doc = he.run_doc(run_id)
    summary = next(s for s in doc["steps"] if s["id"] == "summary")
    assert summary["status"] == "COMPLETED"
    # The call belonged to the background worker, not to the host: neither cut off nor repeated.
    assert summary["execution_metrics"]["crash_recoveries"] == 0
    assert len(he.fake.requests_for("local")) == 1
    assert chromium.bg("self.hybrid.host.reconnects") >= 1
    assert row_cost(popup, run_id) == usd(doc["metrics"]["total_cost"])


def test_a_run_stopped_by_its_budget_goes_on_from_the_popup_with_a_bigger_one(chromium, he, site):
    (he.he_home / "templates" / "e2e-budget.yaml").write_text(
        TEMPLATES["e2e-digest"].replace("name: e2e-digest", "name: e2e-budget") + "budget_usd: 0.0001\n",
        encoding="utf-8")
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-budget")
    stopped = he.wait_run(run_id, "FAILED")
    assert stopped["error_code"] == "budget_exceeded" and he.fake.requests_for("local") == []
    run_row(popup, run_id).locator("button").click()
    popup.wait_for_selector("#detail:not([hidden])")
    button = popup.locator("#retry-run")
    button.wait_for(state="visible")
    assert button.inner_text() == "Retry with a $0.01 run budget"
    # Said as what it is: stopped by the budget before it started, not "failed: Not started".
    assert popup.inner_text("#detail-status") == "STOPPED BY BUDGET"
    assert popup.locator("#detail-error-list li").first.inner_text().startswith("summary: Stopped before it started")
    from test_screens import assert_readable  # here: test_screens imports this module

    # In amber, as a stop: the status and its "Why it stopped" box alike, readable in both schemes.
    assert popup.locator("#detail-errors").get_attribute("data-kind") == "stop"
    shot(popup, "popup-light-detail-budget-stop")
    assert_readable(popup, "budget stop (light)")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-detail-budget-stop")
    assert_readable(popup, "budget stop (dark)")
    popup.emulate_media(color_scheme="light")
    button.click()  # the host that stopped the step runs it again: its budget is read afresh
    done = he.wait_run(run_id, "COMPLETED")
    assert done["budget_usd"] == 0.01 and len(he.fake.requests_for("local")) == 1
    assert 0 < done["metrics"]["total_cost"] <= 0.01


def test_run_detail_warns_of_a_cut_answer_and_marks_an_estimated_cost(chromium, he, site):
    he.fake.set_default("local", finish_reason="length", usage=None)  # cut, and no usage reported
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    run_id = send_from_popup(popup, "e2e-digest")
    wait_row_done(popup, run_id)
    summary = next(s for s in he.run_doc(run_id)["steps"] if s["id"] == "summary")
    cost = summary["execution_metrics"]["cost"]
    assert summary["execution_metrics"]["cost_estimated"] is True and cost > 0
    run_row(popup, run_id).locator("button").click()
    popup.wait_for_selector("#detail:not([hidden])")
    row = popup.locator('#detail-steps tr[data-step-id="summary"]')
    row.wait_for()
    warning = row.locator(".step-warning")
    assert warning.is_visible()
    assert warning.inner_text() == "⚠ cut at max_tokens (200 tokens): the answer is incomplete"
    assert row.locator("td.estimated").inner_text() == f"≈{usd(cost)}"
    assert popup.inner_text("#detail-meta").split(" · ")[0] == f"≈{usd(cost)}"


def row_cost(popup, run_id):
    return run_row(popup, run_id).locator(".cost").inner_text()


def test_popup_explains_a_damaged_database_in_plain_words_with_the_fix(chromium_factory, he, site):
    db = he.he_home / "engine.db"
    db.write_bytes(b"these are not the bytes of a database " * 200)
    chromium = chromium_factory()
    article = site.url("article.html")
    chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector('#connection[data-status="connected"]')
    wait_js(popup, "document.getElementById('runs-empty').textContent.startsWith('Runs unavailable')")
    text = popup.inner_text("#runs-empty")
    assert text.startswith("Runs unavailable: Hybrid Engine's database file is damaged or empty"), text
    assert f"mv {db} {db}.broken" in text
    shot(popup, "popup-light-store-corrupt")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-store-corrupt")


def test_host_missing_capture_is_kept_and_delivered_when_it_returns(chromium_factory, he, site):
    chromium = chromium_factory(register=False)
    article = site.url("article.html")
    tab = chromium.open(article)
    popup = chromium.popup(article)
    popup.wait_for_selector("#host-problem:not([hidden])")
    # Plain words first; the browser's message and the commands under "How to fix it".
    assert popup.inner_text("#host-problem-title") == "Hybrid Engine is not installed for this browser"
    popup.click("#host-problem-details summary")
    assert popup.inner_text("#host-error") == "Specified native messaging host not found."
    assert popup.inner_text("#fix-install") == "hybrid-engine install"
    assert popup.inner_text("#fix-doctor") == "hybrid-engine doctor"
    assert popup.inner_text("#connection") == "Host missing"
    shot(popup, "popup-light-host-missing")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-host-missing")
    popup.emulate_media(color_scheme="light")
    assert chromium.bg("chrome.storage.session.get('hostError')")["hostError"]["message"] == \
        "Specified native messaging host not found."

    tab.evaluate("""() => { const r = document.createRange(); r.selectNodeContents(document.getElementById('lead'));
                   getSelection().removeAllRanges(); getSelection().addRange(r); }""")
    info = {"menuItemId": "selection:e2e-echo", "selectionText": "x", "pageUrl": article, "frameId": 0}
    out = chromium.bg("onMenuClicked(arg.info, arg.tab)",
                      {"info": info, "tab": {"id": chromium.tab_id(article), "url": article, "title": "t"}})
    assert out["queued"] and not out["delivered"], out
    stored = chromium.bg("chrome.storage.local.get(null)")
    assert sorted(k for k in stored if k.startswith("outbox")) == [f"outbox-body:{out['id']}", f"outbox:{out['id']}"]
    assert stored[f"outbox:{out['id']}"]["kind"] == "selection"
    assert stored[f"outbox-body:{out['id']}"]["page"]["metadata"]["kind"] == "selection"
    popup.wait_for_selector("#outbox:not([hidden])")
    assert "1 capture waiting" in popup.inner_text("#outbox-text")
    shot(popup, "popup-light-outbox")
    popup.emulate_media(color_scheme="dark")
    shot(popup, "popup-dark-outbox")
    popup.emulate_media(color_scheme="light")

    # The service worker is stopped (as Chromium does to idle workers); the capture is in storage.
    cdp = popup.context.new_cdp_session(popup)
    stopped: list[str] = []  # a worker may be woken again at once: its "stopped" is kept here
    cdp.on("ServiceWorker.workerVersionUpdated",
           lambda event: stopped.extend(v["versionId"] for v in event["versions"] if v["runningStatus"] == "stopped"))
    cdp.send("ServiceWorker.enable")
    cdp.send("ServiceWorker.stopAllWorkers")
    # Each poll calls into Playwright, which is when its sync API delivers CDP events.
    wait_for(lambda: popup.evaluate("true") and stopped, 60, 0.05, "the service worker to stop")
    chromium.register()  # `hybrid-engine install`, in effect
    popup.reload()  # a person opens the popup again: the worker wakes and connects
    popup.wait_for_selector('#connection[data-status="connected"]')
    popup.wait_for_selector("#outbox", state="hidden")
    assert chromium.bg("self.hybrid.host.outbox.list()") == []
    assert [k for k in chromium.bg("chrome.storage.local.getKeys()") if k.startswith("outbox")] == []
    runs = he.cli_json("runs", "--json")
    runs = runs["runs"] if isinstance(runs, dict) else runs
    assert len(runs) == 1
    doc = he.wait_run(runs[0]["id"])
    doc = he.run_doc(runs[0]["id"])
    page = next(s for s in doc["steps"] if s["id"] == "page")
    assert "Local-first workflows keep every step" in page["outputs"]["content"]
    assert page["metadata"]["capture_id"] == out["id"]
    run_row(popup, doc["id"]).wait_for()


def test_five_megabyte_page_and_output_round_trip(chromium, he, site):
    five = site.url("five.html")
    tab = chromium.open(five)
    serialised = tab.evaluate("(document.doctype ? `<!DOCTYPE ${document.doctype.name}>\\n` : '')"
                              " + document.documentElement.outerHTML")
    assert len(serialised.encode()) > 5_000_000
    popup = chromium.popup(five)
    run_id = send_from_popup(popup, "e2e-echo")
    wait_row_done(popup, run_id)
    run_row(popup, run_id).locator("button").click()
    popup.wait_for_selector("#copy-output:not([disabled])")
    doc = he.run_doc(run_id)
    echo = next(s for s in doc["steps"] if s["id"] == "echo")["outputs"]["text"]
    assert sha256(echo) == sha256(serialised)
    assert "showing the first" in popup.inner_text("#output-note")
    # Copy hands all of it to the clipboard (recorded: headless has no clipboard to read back).
    popup.evaluate("""() => { window.__copied = null; const w = navigator.clipboard.writeText.bind(navigator.clipboard);
      navigator.clipboard.writeText = (t) => { window.__copied = t; return w(t); }; }""")
    popup.get_by_role("button", name="Copy the final output").click()
    wait_js(popup, "window.__copied !== null")
    got = popup.evaluate("""async () => {
      const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(window.__copied));
      return [...new Uint8Array(d)].map(b => b.toString(16).padStart(2, '0')).join(''); }""")
    assert got == sha256(echo), "the 5 MB output did not reassemble intact"
