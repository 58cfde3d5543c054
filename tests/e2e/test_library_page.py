"""The library page and the "already sent" badge in Chromium, against the real host and the
fake model on loopback: two pages sent from the extension, one found by a word of its
summary, deleted from the page; a tab on a page that has a result shows it on the badge."""

from __future__ import annotations

import pytest

from e2e_world import EXT_ORIGIN, shot, wait_for

pytestmark = pytest.mark.e2e

SUMMARIES = {"article.html": "Durable engines keep a ledger of heliotrope tokens.",
             "target.html": "A target page about basalt columns."}


def send_page(chromium, he, url: str) -> str:
    """Send the tab showing `url` to e2e-digest as the popup's Send does; wait for its result."""
    he.fake.script("local", text=SUMMARIES[url.rsplit("/", 1)[1]])
    reply = chromium.bg("self.hybrid.handleMessage({type: 'capture.page', tabId: arg, template: 'e2e-digest'})",
                        chromium.tab_id(url))
    assert reply["ok"], reply
    run_id = reply["result"]["result"]["run_id"]
    he.wait_run(run_id)
    return run_id


def results(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#results li')].map(li => li.dataset.runId)")


def test_library_finds_a_run_by_a_word_of_its_summary_and_deletes_it(chromium, he, site):
    article, target = site.url("article.html"), site.url("target.html")
    chromium.open(article)
    chromium.open(target)
    chromium.wait_connected()
    first = send_page(chromium, he, article)
    second = send_page(chromium, he, target)

    library = chromium.ctx.new_page()
    library.goto(f"{EXT_ORIGIN}/library/library.html")
    wait_for(lambda: set(results(library)) == {first, second}, 30, what="both runs listed")
    row = library.locator(f'#results li[data-run-id="{first}"]')
    assert row.locator(".title").inner_text() == "The Durable Engine"  # named by its page
    assert row.locator(".source").inner_text() == "127.0.0.1"
    wait_for(lambda: "runs" in library.inner_text("#stats") and "store" in library.inner_text("#stats"), 20,
             what="the store's size")

    library.fill("#query", "heliotrope")
    wait_for(lambda: results(library) == [first], 30, what="the search to find the first page only")
    assert row.locator(".snippet mark").inner_text().lower() == "heliotrope"
    shot(library, "library-light-search")
    library.emulate_media(color_scheme="dark")
    shot(library, "library-dark-search")
    library.emulate_media(color_scheme="light")

    delete = row.get_by_role("button", name="Delete")
    delete.click()
    row.get_by_role("button", name="Delete for good?").click()
    wait_for(lambda: results(library) == [], 30, what="the deleted run to leave the list")
    assert library.inner_text("#count") == "No run matches."
    assert he.cli_json("search", "heliotrope", "--json")["total"] == 0  # gone from the store too
    assert [r["id"] for r in he.cli_json("search", "basalt", "--json")["runs"]] == [second]


def test_a_tab_whose_page_already_has_a_result_says_so_on_its_badge(chromium, he, site):
    article = site.url("article.html")
    chromium.open(article)
    chromium.wait_connected()
    run_id = send_page(chromium, he, article)

    again = chromium.open(article + "#again")  # a fragment is the same page
    tab = chromium.tab_id(article + "#again")
    wait_for(lambda: chromium.bg("chrome.action.getBadgeText({tabId: arg})", tab) == "\u2713", 30,
             what="the badge to say the page was sent")
    title = chromium.bg("chrome.action.getTitle({tabId: arg})", tab)
    assert title.startswith("Already sent: e2e-digest,") and "$" in title
    other = chromium.open(site.url("target.html"))
    other_tab = chromium.tab_id(site.url("target.html"))
    assert chromium.bg("self.hybrid.checkTab(arg, '" + site.url("target.html") + "')", other_tab) is None
    assert chromium.bg("chrome.action.getBadgeText({tabId: arg})", other_tab) != "\u2713"
    assert he.cli_json("show", run_id, "--json")["page"]["url"] == article
    again.close()
    other.close()


def test_opening_the_popup_on_a_page_already_sent_marks_its_badge(chromium, he, site):
    # Without the optional `tabs` permission a page load does not show the extension the tab's
    # address; the popup's click does, and the estimate sets the mark from it.
    article = site.url("article.html")
    chromium.open(article)
    chromium.wait_connected()
    send_page(chromium, he, article)
    again = chromium.open(article + "#again")
    tab = chromium.tab_id(article + "#again")
    wait_for(lambda: chromium.bg("chrome.action.getBadgeText({tabId: arg})", tab) == "\u2713", 30,
             what="the badge to say the page was sent")
    chromium.bg("chrome.action.setBadgeText({tabId: arg, text: ''})", tab)  # as a load without `tabs` leaves it
    popup = chromium.popup(article + "#again")
    wait_for(lambda: chromium.bg("chrome.action.getBadgeText({tabId: arg})", tab) == "\u2713", 30,
             what="the popup's estimate to mark the badge")
    popup.close()
    again.close()


def test_the_library_loads_no_favicon_url_a_page_named_only_inline_images(chromium, he, site):
    chromium.wait_connected()
    pixel = site.url("diagram.png") + "?tracked=1"  # a favicon URL the page chose: loading it is a request
    page = {"content": "<html><body><p>Page about basalt.</p></body></html>", "content_type": "text/html",
            "source_url": "https://news.example.org/tracked", "title": "Tracked", "metadata": {"favicon": pixel}}
    run_id = chromium.bg("self.hybrid.host.request('capture', {template: 'e2e-echo', page: arg})", page)["run_id"]
    he.wait_run(run_id)
    seen: list[str] = []
    chromium.ctx.on("request", lambda r: seen.append(r.url))
    library = chromium.ctx.new_page()
    library.goto(f"{EXT_ORIGIN}/library/library.html")
    wait_for(lambda: results(library) == [run_id], 30, what="the run listed")
    assert library.locator(f'#results li[data-run-id="{run_id}"] img').count() == 0
    assert [u for u in seen if "tracked" in u] == []
