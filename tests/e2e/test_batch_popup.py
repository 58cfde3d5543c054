"""Many pages as one batch, in real Chromium with the real host: the popup's "Send N tabs"
reads every tab, shows one combined estimate before anything is sent, and sends them as one
batch shown as one row; a page whose model call fails is retried alone. The context menu's
"Send links in selection" goes the same way, with the host fetching the links."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from e2e_world import EXT_ORIGIN, GUARD_S, Chromium, shot, wait_for, wait_js

PAGES = 6


def _write_pages(site, prefix: str, n: int) -> list[str]:
    urls = []
    for i in range(n):
        name = f"{prefix}-{i}.html"
        body = f"Page {i} of the {prefix} batch: " + " ".join(f"{prefix}{i}word{k}" for k in range(60))
        (site.root / name).write_text(
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{prefix.title()} page {i} '
            f'&lt;b&gt;</title></head><body><article><h1>{prefix} page {i}</h1><p>{body}</p></article></body></html>',
            encoding="utf-8")
        urls.append(site.url(name))
    return urls


def _marker(request, prefix: str) -> int | None:
    """Which page a provider request was about, from the prompt it carried."""
    text = json.dumps(request.body)
    hits = [i for i in range(PAGES) if f"{prefix}{i}word0 " in text]
    return hits[0] if len(hits) == 1 else None


def _open_tabs(chromium, urls):
    for url in urls:
        chromium.open(url)
    tabs = chromium.bg("chrome.tabs.query({})")
    mine = [t for t in tabs if t.get("url") in urls]
    assert len(mine) == len(urls), tabs
    return mine


def _batch_row(popup):
    return popup.locator("#batch-list li.batch-row").first


def test_six_tabs_go_as_one_batch_after_one_estimate_and_a_failed_page_is_retried_alone(chromium, he, site):
    urls = _write_pages(site, "tabs", PAGES)
    tabs = _open_tabs(chromium, urls)
    window = tabs[0]["windowId"]
    assert all(t["windowId"] == window for t in tabs), tabs
    chromium.wait_connected()
    # The first model call of the batch fails for good (HTTP 400 is not retried).
    he.fake.script("local", status=400, error="the fake provider refuses this one")

    # The popup here is a tab, and opening a tab selects it alone: the six tabs are
    # highlighted after it opened (a person shift-clicks them), and it is loaded again, as
    # the toolbar popup opens over the highlighted tabs.
    popup = chromium.popup(urls[0])
    chromium.bg("chrome.tabs.highlight({windowId: arg.window, tabs: arg.indices})",
                {"window": window, "indices": sorted(t["index"] for t in tabs)})
    popup.reload()
    source = popup.locator("#batch-source")
    wait_for(lambda: source.input_value() == "highlighted", GUARD_S, 0.1, "the highlighted tabs as the source")
    button = popup.locator("#batch-button")
    assert button.text_content() == f"Send {PAGES} tabs"
    button.click()

    # One combined estimate first: nothing is sent yet, no batch exists.
    popup.locator("#batch-review").wait_for(state="visible")
    cost = popup.locator("#batch-estimate-cost").text_content()
    assert cost.startswith(f"Estimate for {PAGES} pages: $"), cost
    assert "prompt tokens" in popup.locator("#batch-estimate-detail").text_content()
    daily = popup.locator('#batch-budgets li[data-kind="daily"]')
    assert daily.get_attribute("data-ok") == "true"
    assert "Daily budget $0.50" in daily.text_content()
    assert popup.locator("#batch-page-list li").count() == PAGES
    # A page title is shown as text, never as markup.
    assert "Tabs page 0 <b>" in popup.locator("#batch-page-list").text_content()
    assert popup.locator("#batch-page-list b").count() == 0
    assert he.fake.requests == []
    assert chromium.bg("self.hybrid.host.request('batch.list', {})")["batches"] == []
    shot(popup, "batch-estimate-light")

    popup.locator("#batch-confirm").click()
    row = _batch_row(popup)
    row.wait_for(state="visible")
    wait_for(lambda: row.get_attribute("data-status") == "failed", GUARD_S, 0.2, "the batch to end with one failure")
    assert row.locator(".n-done").text_content() == f"{PAGES - 1}/{PAGES} done"
    assert row.locator(".n-failed").text_content() == "1 failed"
    batches = chromium.bg("self.hybrid.host.request('batch.list', {})")["batches"]
    assert len(batches) == 1
    batch = chromium.bg("self.hybrid.host.request('batch.get', {batch_id: arg})", batches[0]["id"])
    run_ids = [it["run_id"] for it in batch["items"]]
    assert len(set(run_ids)) == PAGES and None not in run_ids
    # The batch's runs are its row's: none of them is listed as a row of its own.
    for run_id in run_ids:
        assert popup.locator(f'#run-list li[data-run-id="{run_id}"]').count() == 0
    assert len(he.fake.requests) == PAGES
    failed = [it for it in batch["items"] if it["run_status"] == "FAILED"]
    assert len(failed) == 1
    refused = [r for r in he.fake.requests if r.status == 400]
    assert len(refused) == 1
    failed_page = _marker(refused[0], "tabs")
    assert failed_page is not None and failed[0]["title"] == f"Tabs page {failed_page} <b>"
    shot(popup, "batch-row-failed-light")

    row.locator("button.retry").click()
    wait_for(lambda: row.get_attribute("data-status") == "completed", GUARD_S, 0.2, "the retried page to complete")
    assert row.locator(".n-done").text_content() == f"{PAGES}/{PAGES} done"
    assert row.locator("button.retry").is_hidden()
    # Only the failed page went to the provider again; the other five were not re-sent.
    assert len(he.fake.requests) == PAGES + 1
    per_page = [_marker(r, "tabs") for r in he.fake.requests]
    assert sorted(per_page) == sorted([*range(PAGES), failed_page])
    assert per_page[-1] == failed_page
    assert he.wait_run(failed[0]["run_id"])["status"] == "COMPLETED"
    cost_text = row.locator(".cost").text_content()
    assert cost_text.startswith("$") and cost_text != "$0", cost_text
    row.locator("details.items-box summary").click()
    assert row.locator(".batch-items li").count() == PAGES
    shot(popup, "batch-row-light")
    dark = chromium.popup(urls[0], dark=True)
    dark_row = _batch_row(dark)
    dark_row.wait_for(state="visible")
    wait_for(lambda: dark_row.get_attribute("data-status") == "completed", GUARD_S, 0.2, "the row in the dark popup")
    dark_row.locator("details.items-box summary").click()
    shot(dark, "batch-row-dark")


def test_a_batch_can_be_paused_resumed_and_cancelled_from_its_row(chromium, he, site):
    urls = _write_pages(site, "steer", 3)
    tabs = _open_tabs(chromium, urls)
    chromium.wait_connected()
    he.fake.hold()  # the model calls wait, so the batch is still under way when it is steered
    popup = chromium.popup(urls[0])
    # The three tabs highlighted: the window's other tabs (its first blank one, this popup) have
    # no address the extension may see without `tabs`, which a window-wide batch would ask for.
    chromium.bg("chrome.tabs.highlight({windowId: arg.window, tabs: arg.indices})",
                {"window": tabs[0]["windowId"], "indices": sorted(t["index"] for t in tabs)})
    popup.reload()
    source = popup.locator("#batch-source")
    wait_for(lambda: source.input_value() == "highlighted", GUARD_S, 0.1, "the highlighted tabs as the source")
    popup.locator("#batch-button").click()
    popup.locator("#batch-review").wait_for(state="visible")
    popup.locator("#batch-confirm").click()
    row = _batch_row(popup)
    row.wait_for(state="visible")
    he.fake.wait_requests(1)
    row.locator("button.pause").click()
    wait_for(lambda: row.get_attribute("data-state") == "paused", GUARD_S, 0.2, "the batch to be paused")
    assert row.locator("button.resume").is_visible()
    row.locator("button.resume").click()
    wait_for(lambda: row.get_attribute("data-state") == "running", GUARD_S, 0.2, "the batch to run again")
    row.locator("button.cancel").click()
    wait_for(lambda: row.get_attribute("data-status") == "cancelled", GUARD_S, 0.2, "the batch to be cancelled")
    he.fake.release()
    assert row.locator("button.retry").is_hidden() and row.locator("button.resume").is_hidden()


def test_links_in_a_selection_go_as_one_batch_and_a_page_behind_a_login_is_read_in_the_browser(chromium, he, site):
    urls = _write_pages(site, "links", 4)
    # The fourth sits behind a "login": the host's fetch is redirected to /login/ and leaves it
    # to the browser, which shows it (a person's session would).
    (site.root / "login").mkdir(exist_ok=True)
    (site.root / "links-3.html").rename(site.root / "login" / "index.html")
    urls[3] = site.url("login")
    listing = site.root / "links-index.html"
    anchors = "".join(f'<li><a href="{u}">link {i}</a></li>' for i, u in enumerate(urls))
    listing.write_text(f'<!DOCTYPE html><title>Links</title><ul id="sel">{anchors}</ul>'
                       '<p><a href="/outside.html">not selected</a></p>', encoding="utf-8")
    page = chromium.open(site.url("links-index.html"))
    chromium.wait_connected()
    item = "links:e2e-digest"
    wait_for(lambda: chromium.bg(f"new Promise(r => chrome.contextMenus.update({json.dumps(item)}, {{}}, "
                                 "() => r(!chrome.runtime.lastError)))"), GUARD_S, 0.2, "the links menu item")
    page.evaluate("() => getSelection().selectAllChildren(document.getElementById('sel'))")
    tab_id = chromium.tab_id(site.url("links-index.html"))
    info = {"menuItemId": item, "selectionText": "link 0 link 1 link 2 link 3",
            "pageUrl": site.url("links-index.html"), "frameId": 0}
    with chromium.ctx.expect_page() as opened:
        got = chromium.bg("onMenuClicked(arg.info, {id: arg.tab, url: arg.url})",
                          {"info": info, "tab": tab_id, "url": site.url("links-index.html")})
    assert got == {"links": 4}
    popup = opened.value
    popup.wait_for_load_state()
    source = popup.locator("#batch-source")
    wait_for(lambda: source.input_value() == "links", GUARD_S, 0.1, "the links as the source")
    assert popup.locator("#workflow").input_value() == "e2e-digest"
    popup.locator("#batch-button").click()
    popup.locator("#batch-review").wait_for(state="visible")
    assert popup.locator("#batch-page-list li").count() == 4
    assert "needs browser" in popup.locator("#batch-page-list").text_content()
    # The estimate covers the three pages the host could fetch.
    cost = popup.locator("#batch-estimate-cost").text_content()
    assert cost.startswith("Estimate for 3 pages: $"), cost
    assert he.fake.requests == []
    popup.locator("#batch-confirm").click()
    row = _batch_row(popup)
    wait_for(lambda: row.get_attribute("data-status") == "waiting_for_browser", GUARD_S, 0.2,
             "the three fetched pages to be done")
    assert sorted(_marker(r, "links") for r in he.fake.requests) == [0, 1, 2]
    take_over = row.locator("button.take-over")
    assert take_over.text_content() == "Read 1 in the browser"
    take_over.click()
    wait_for(lambda: row.get_attribute("data-status") == "completed", GUARD_S, 0.2, "the page read in the browser")
    assert sorted(_marker(r, "links") for r in he.fake.requests) == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def extension_with_bookmarks(extension_dir, tmp_path_factory) -> Path:
    """The e2e copy with `bookmarks` granted, standing in for the person's yes to the popup's
    request (a headless browser cannot answer a permission prompt)."""
    dest = tmp_path_factory.mktemp("ext-bookmarks") / "extension"
    shutil.copytree(extension_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    manifest["permissions"].append("bookmarks")
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return dest


def test_a_bookmark_folder_goes_as_one_batch(playwright_session, he, site, extension_with_bookmarks):
    urls = _write_pages(site, "marks", 2)
    chromium = Chromium(playwright_session, he, extension_with_bookmarks)
    try:
        chromium.wait_connected()
        chromium.bg("chrome.bookmarks.create({title: 'Reading list'}).then((f) => Promise.all(arg.map((u, i) => "
                    "chrome.bookmarks.create({parentId: f.id, title: 'mark ' + i, url: u}))))", urls)
        page = chromium.open(site.url("marks-0.html"))
        popup = chromium.popup(page.url)
        source = popup.locator("#batch-source")
        wait_for(lambda: source.locator('option[value="bookmarks"]').count() == 1, GUARD_S, 0.1, "the bookmarks source")
        source.select_option("bookmarks")
        folder = popup.locator("#batch-folder")
        folder.wait_for(state="visible")
        label = next(t for t in folder.locator("option").all_text_contents() if t.endswith("Reading list (2)"))
        folder.select_option(label=label)
        button = popup.locator("#batch-button")
        assert button.text_content() == "Send 2 bookmarks"
        button.click()
        popup.locator("#batch-review").wait_for(state="visible")
        assert popup.locator("#batch-page-list li").count() == 2
        assert he.fake.requests == []
        popup.locator("#batch-confirm").click()
        row = _batch_row(popup)
        wait_for(lambda: row.get_attribute("data-status") == "completed", GUARD_S, 0.2, "the bookmarks batch")
        assert sorted(_marker(r, "marks") for r in he.fake.requests) == [0, 1]
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def extension_as_shipped(extension_dir, tmp_path_factory) -> Path:
    """The e2e copy without its grant of 127.0.0.1: as installed, the extension sees no tab's
    address (`tabs` is optional and not given), so the batch cannot know the tabs' sites."""
    dest = tmp_path_factory.mktemp("ext-shipped") / "extension"
    shutil.copytree(extension_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("host_permissions", None)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return dest


def test_without_the_tabs_permission_sending_tabs_asks_for_it_and_every_site_in_the_click(
        playwright_session, he, site, extension_as_shipped):
    urls = _write_pages(site, "hidden", 2)
    chromium = Chromium(playwright_session, he, extension_as_shipped)
    try:
        chromium.wait_connected()
        for url in urls:
            chromium.open(url)
        tabs = chromium.bg("chrome.tabs.query({})")
        assert not any(t.get("url") for t in tabs), tabs  # the addresses are hidden, as installed
        tab_id = chromium.bg("chrome.tabs.query({active: true, lastFocusedWindow: true}).then((t) => t[0].id)")
        popup = chromium.ctx.new_page()
        popup.set_viewport_size({"width": 400, "height": 640})
        popup.goto(f"{EXT_ORIGIN}/popup/popup.html?tab={tab_id}")
        button = popup.locator("#batch-button")
        wait_for(lambda: re.fullmatch(r"Send [1-9]\d* tabs", button.text_content() or ""), GUARD_S, 0.1,
                 "the tabs counted although their addresses are hidden")
        # A person's "no" to the prompt, which a headless browser cannot show.
        popup.evaluate("() => { chrome.permissions.request = (req) => { window.__asked = req; "
                       "return Promise.resolve(false); }; }")
        button.click()
        asked = wait_js(popup, "window.__asked")
        assert asked == {"origins": ["http://*/*", "https://*/*"], "permissions": ["tabs"]}
        wait_for(lambda: "needs access to their sites" in popup.inner_text("#batch-status"), GUARD_S, 0.1,
                 "the refusal said")
        assert he.fake.requests == []
    finally:
        chromium.close()


def test_a_link_to_a_site_ruled_never_is_neither_fetched_nor_sent(chromium, he, site):
    config = he.he_home / "config.toml"
    config.write_text(config.read_text(encoding="utf-8") + '\n[[sites]]\nmatch = "localhost"\nrule = "never"\n',
                      encoding="utf-8")
    urls = _write_pages(site, "ruled", 2)
    urls[1] = urls[1].replace("127.0.0.1", "localhost")
    listing = site.root / "ruled-index.html"
    anchors = "".join(f'<li><a href="{u}">link {i}</a></li>' for i, u in enumerate(urls))
    listing.write_text(f'<!DOCTYPE html><title>Links</title><ul id="sel">{anchors}</ul>', encoding="utf-8")
    page = chromium.open(site.url("ruled-index.html"))
    chromium.wait_connected()
    item = "links:e2e-digest"
    wait_for(lambda: chromium.bg(f"new Promise(r => chrome.contextMenus.update({json.dumps(item)}, {{}}, "
                                 "() => r(!chrome.runtime.lastError)))"), GUARD_S, 0.2, "the links menu item")
    page.evaluate("() => getSelection().selectAllChildren(document.getElementById('sel'))")
    info = {"menuItemId": item, "selectionText": "link 0 link 1", "pageUrl": site.url("ruled-index.html"),
            "frameId": 0}
    with chromium.ctx.expect_page() as opened:
        chromium.bg("onMenuClicked(arg.info, {id: arg.tab, url: arg.url})",
                    {"info": info, "tab": chromium.tab_id(site.url("ruled-index.html")),
                     "url": site.url("ruled-index.html")})
    popup = opened.value
    popup.wait_for_load_state()
    wait_for(lambda: popup.locator("#batch-source").input_value() == "links", GUARD_S, 0.1, "the links as the source")
    popup.locator("#batch-button").click()
    popup.locator("#batch-review").wait_for(state="visible")
    popup.locator("#batch-confirm").click()
    row = _batch_row(popup)
    wait_for(lambda: row.get_attribute("data-status") == "completed", GUARD_S, 0.2, "the batch to finish")
    # Left out by the extension (which knows the rule once the host's config reached it) or
    # refused by the host: either way its page is never fetched, and the batch keeps its site only.
    (batch,) = he.cli_json("batches", "--json")["batches"]
    assert batch["counts"]["completed"] == 1 and batch["counts"]["failed"] == 0
    assert [_marker(r, "ruled") for r in he.fake.requests] == [0]
    row.locator("details.items-box summary").click()
    assert "ruled-1" not in row.locator("details.items-box").inner_text()
