"""The extension's screens as a person sees them, in light and dark, with the page data people
actually meet: long titles, a hostile title with no place to break, right-to-left text, many
runs, an empty library, a narrow window. Each test takes screenshots (artifacts/screens-*.png)
and checks what a reviewer would otherwise have to spot by eye: nothing wider than its window,
titles cut with an ellipsis instead of pushing the cost off the card, cards that do not touch,
text that keeps a 4.5:1 contrast against what is behind it."""

from __future__ import annotations

import pytest

from e2e_world import EXT_ORIGIN, shot, wait_for, wait_js
from test_chromium import run_row

pytestmark = pytest.mark.e2e

LONG = ("How a small team rebuilt its durable workflow engine on SQLite and kept every "
        "step's tokens and cost in one ledger, with notes on recovery and budgets")
HOSTILE = "<b>" + "W" * 400 + "&amp;" + "\u202e" + "x" * 400 + "</b>"
RTL = "محرك سير العمل الدائم: كيف نحفظ كل خطوة ותיעוד מלא של העלות"
TITLES = [LONG, HOSTILE, RTL] + [f"Article number {n} on basalt columns" for n in range(1, 10)]

# Text whose contrast against the background it is drawn on is below 4.5:1 (WCAG AA for body
# text). Disabled controls are exempt, as WCAG exempts them.
LOW_CONTRAST_JS = """() => {
  const rgba = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = (c) => { const [r, g, b] = rgba(c).slice(0, 3).map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const canvas = matchMedia("(prefers-color-scheme: dark)").matches ? "rgb(0, 0, 0)" : "rgb(255, 255, 255)";
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor; const p = rgba(c);
      if (p.length === 3 || (p.length === 4 && p[3] > 0)) return c;
    }
    return canvas;
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    if (!el.getClientRects().length || el.closest(":disabled, .visually-hidden, option, [hidden]")) continue;
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || Number(st.opacity) === 0) continue;
    const [a, b] = [lum(st.color), lum(behind(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${st.color} on ${behind(el)}: ${ratio.toFixed(2)}`);
  }
  return bad;
}"""

OVERFLOW_JS = """() => {
  const d = document.documentElement;
  return { scroll: d.scrollWidth, client: d.clientWidth };
}"""

# Boxes of the visible children of a vertical stack: [top, bottom] each, in order.
GAPS_JS = """(sel) => [...document.querySelector(sel).children]
  .filter((e) => e.getClientRects().length && getComputedStyle(e).display !== "none")
  .map((e) => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, e.id || e.className]; })"""


def assert_no_horizontal_overflow(page, what):
    box = page.evaluate(OVERFLOW_JS)
    assert box["scroll"] <= box["client"], f"{what} scrolls sideways: {box}"


def assert_readable(page, what):
    assert page.evaluate(LOW_CONTRAST_JS) == [], f"{what}: text below 4.5:1 contrast"


def assert_apart(page, selector, what):
    boxes = page.evaluate(GAPS_JS, selector)
    for (_, bottom, a), (top, _, b) in zip(boxes, boxes[1:]):
        assert top - bottom > 0, f"{what}: {a} and {b} touch ({bottom} -> {top})"


def both(page, name, check):
    """Screenshot in light and dark, and run `check` in each."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        check(page, scheme)
        shot(page, f"screens-{name}-{scheme}")
    page.emulate_media(color_scheme="light")


def seed_runs(chromium, he, titles, template="e2e-echo") -> list[str]:
    """One finished run per title, as a capture of a page with that title (e2e-echo: no model)."""
    chromium.wait_connected()
    ids = []
    for n, title in enumerate(titles):
        page = {"content": f"<html><body><p>Page {n} about basalt.</p></body></html>", "content_type": "text/html",
                "source_url": f"https://news.example.org/2026/article-{n}", "title": title}
        reply = chromium.bg("self.hybrid.host.request('capture', {template: arg.template, page: arg.page})",
                            {"template": template, "page": page})
        ids.append(reply["run_id"])
    for run_id in ids:
        he.wait_run(run_id)
    return ids


def test_popup_cuts_long_titles_with_an_ellipsis_and_keeps_status_and_cost_on_the_card(chromium, he):
    ids = seed_runs(chromium, he, TITLES)
    he.fake.script("local", text="A summary that cost something.")
    paid = seed_runs(chromium, he, ["A page sent to a model"], template="e2e-digest")
    popup = chromium.popup()
    wait_js(popup, f"document.querySelectorAll('#run-list li[data-status=COMPLETED]').length >= {len(ids) + 1}")
    wait_js(popup, "document.querySelectorAll('#spend-text .nowrap').length === 2")
    # No token count on a run that called no model; a run that did shows its count.
    assert run_row(popup, ids[0]).locator(".tokens").is_hidden()
    assert run_row(popup, paid[0]).locator(".tokens").is_visible()

    def check(page, scheme):
        assert_no_horizontal_overflow(page, f"popup ({scheme})")
        assert_apart(page, "#list-view", f"popup ({scheme})")
        assert_readable(page, f"popup ({scheme})")
        for run_id in ids[:3]:
            row = run_row(page, run_id)
            card = row.locator("button.run").bounding_box()
            for part in (".status", ".cost", ".age"):
                box = row.locator(part).bounding_box()
                assert box["x"] >= card["x"] and box["x"] + box["width"] <= card["x"] + card["width"], \
                    f"{part} of {run_id} is off its card"
            name = row.locator(".name")
            assert name.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
            assert name.evaluate("e => e.scrollWidth > e.clientWidth"), "a long title is cut"
            assert name.bounding_box()["height"] < 24, "a title stays on one line"
        for part in page.locator("#spend-text .nowrap").all():  # "$x of $y daily budget", "this month $z"
            assert part.bounding_box()["height"] < 24, "a spend fact wraps between label and figure"

    both(popup, "popup-many-runs", check)


def test_popup_detail_wraps_a_hostile_title_within_the_popup(chromium, he):
    ids = seed_runs(chromium, he, [HOSTILE])
    popup = chromium.popup()
    wait_js(popup, f"!!document.querySelector('#run-list li[data-run-id=\"{ids[0]}\"][data-status=COMPLETED]')")
    run_row(popup, ids[0]).locator("button").click()
    popup.wait_for_selector("#detail:not([hidden])")
    wait_js(popup, "document.getElementById('detail-title').textContent.length > 100")

    def check(page, scheme):
        assert_no_horizontal_overflow(page, f"detail ({scheme})")
        assert_readable(page, f"detail ({scheme})")
        title = page.locator("#detail-title")
        assert title.evaluate("e => e.scrollWidth <= e.clientWidth")
        assert title.bounding_box()["height"] <= 4 * 22, "a title of any length takes at most a few lines"
        assert page.locator("#detail-title").evaluate("e => e.title.length") > 100, "the whole title is in its tooltip"

    both(popup, "popup-detail-hostile-title", check)


def test_library_shows_an_empty_state_then_long_titles_within_a_narrow_window(chromium, he):
    chromium.wait_connected()
    library = chromium.ctx.new_page()
    library.goto(f"{EXT_ORIGIN}/library/library.html")
    wait_for(lambda: library.inner_text("#count").startswith("No runs yet. Send a page"), 30,
             what="the empty library, saying how to fill it")
    dates = library.evaluate("() => ['since', 'until'].map(id => document.getElementById(id).getBoundingClientRect().top)")
    assert dates[0] == dates[1], f"From and To share a line: {dates}"

    def check_empty(page, scheme):
        assert_readable(page, f"empty library ({scheme})")
        assert_no_horizontal_overflow(page, f"empty library ({scheme})")
        font = page.evaluate("() => getComputedStyle(document.getElementById('count')).fontSize")
        assert font == "14px", f"the library's text is 14px, as its stylesheet says, not {font}"

    both(library, "library-empty", check_empty)

    ids = seed_runs(chromium, he, TITLES[:4])
    library.reload()
    wait_for(lambda: library.locator("#results li").count() == 4, 30, what="four runs listed")

    def check_rows(page, scheme):
        assert_no_horizontal_overflow(page, f"library ({scheme})")
        assert_readable(page, f"library ({scheme})")
        assert_apart(page, "#results", f"library ({scheme})")
        for run_id in ids:
            row = page.locator(f'#results li[data-run-id="{run_id}"]')
            assert row.locator(".title").bounding_box()["height"] <= 3 * 22, "a title takes at most three lines"
            li, actions = row.bounding_box(), row.locator(".actions").bounding_box()
            assert actions["x"] + actions["width"] <= li["x"] + li["width"], "the buttons stay on the row"

    both(library, "library-long-titles", check_rows)
    library.set_viewport_size({"width": 420, "height": 800})
    both(library, "library-narrow", check_rows)


def test_options_page_reads_in_light_and_dark_and_in_a_narrow_window(chromium, he):
    chromium.wait_connected()
    options = chromium.ctx.new_page()
    options.goto(f"{EXT_ORIGIN}/options/options.html")
    wait_js(options, "document.getElementById('default-workflow').options.length > 1")
    # Connected: the host's folder, not a "not reported yet" left from before it answered.
    wait_js(options, "document.getElementById('templates-folder').textContent.includes('templates')")
    wait_js(options, "document.getElementById('spend-note').textContent.startsWith('Nothing spent')")
    assert options.locator("#spend-chart").is_hidden(), "no blank chart for thirty days of nothing"

    def check(page, scheme):
        assert_no_horizontal_overflow(page, f"options ({scheme})")
        assert_readable(page, f"options ({scheme})")
        assert_apart(page, "main", f"options ({scheme})")

    both(options, "options", check)
    options.set_viewport_size({"width": 400, "height": 900})
    both(options, "options-narrow", check)


def test_result_tab_reads_in_dark_with_a_long_title(chromium, he):
    ids = seed_runs(chromium, he, [LONG])
    tab = chromium.ctx.new_page()
    tab.goto(f"{EXT_ORIGIN}/result/result.html#run={ids[0]}&step=echo")
    wait_js(tab, "document.querySelector('h1') && document.querySelector('h1').textContent.length > 50")

    def check(page, scheme):
        assert_no_horizontal_overflow(page, f"result tab ({scheme})")
        assert_readable(page, f"result tab ({scheme})")

    both(tab, "result-tab", check)
