"""The options page configures the host, in real Chromium against the real host: a provider
key set from the page (kept by the host alone), budgets refused or written to config.toml,
the capture size refused in place, and spend per day drawn as SVG from local data."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from e2e_world import EXT_ORIGIN, shot, wait_for, wait_js

pytestmark = pytest.mark.e2e

SECRET = "sk-e2e-options-secret-0123456789abcdef"


def open_options(chromium):
    chromium.wait_connected()
    page = chromium.ctx.new_page()
    page.set_viewport_size({"width": 720, "height": 1100})
    page.goto(f"{EXT_ORIGIN}/options/options.html")
    return page


def test_a_key_set_in_options_is_reported_by_keys_status_and_kept_by_the_host_alone(chromium, he):
    options = open_options(chromium)
    options.wait_for_selector("#key-form:not([hidden])")
    options.select_option("#key-provider", "openai")
    options.fill("#key-input", SECRET)
    options.click("#key-save")
    options.wait_for_selector('#key-status[data-kind="ok"]')
    keys_file = he.he_home / "keys.json"
    assert f"openai: key set (from {keys_file})" in options.inner_text("#providers").splitlines()
    assert options.input_value("#key-input") == ""

    status = chromium.bg("self.hybrid.handleMessage({type: 'keys.status'})")
    assert status["ok"] and status["result"]["providers"]["openai"]["key"] is True
    assert status["result"]["providers"]["openai"]["source"] == "keys_file"
    assert json.loads(keys_file.read_text()) == {"openai": SECRET}
    listed = {p["provider"]: p for p in he.cli_json("keys", "list", "--json")["providers"]}
    assert listed["openai"]["configured"] is True

    # Nowhere in the extension: its storage, its replies, the page.
    stored = chromium.bg("Promise.all([chrome.storage.local.get(null), chrome.storage.session.get(null)])")
    assert SECRET not in json.dumps(stored)
    assert SECRET not in json.dumps(status)
    assert SECRET not in json.dumps(chromium.bg("self.hybrid.handleMessage({type: 'config'})"))
    assert SECRET not in options.content()
    shot(options, "options-key-set-light")


def test_an_invalid_budget_is_refused_next_to_the_field_and_the_file_is_kept(chromium, he):
    config = he.he_home / "config.toml"
    before = config.read_text()
    options = open_options(chromium)
    options.wait_for_selector("#host-settings:not([hidden])")
    wait_js(options, "document.getElementById('set-budgets-daily_usd').value === '0.5'")
    daily = options.locator("#set-budgets-daily_usd")
    daily.fill("-2")
    daily.press("Tab")
    error = options.locator("#set-budgets-daily_usd + .field-error")
    error.wait_for(state="visible")
    assert "[budgets] daily_usd" in error.inner_text() and ">= 0" in error.inner_text()
    assert options.inner_text("#settings-saved") == "Not saved."
    assert daily.get_attribute("aria-invalid") == "true" and daily.input_value() == "-2"
    assert config.read_text() == before
    options.emulate_media(color_scheme="dark")
    shot(options, "options-budget-refused-dark")

    daily.fill("2.5")
    daily.press("Tab")
    wait_js(options, "document.getElementById('settings-saved').textContent === 'Saved to config.toml.'")
    assert error.is_hidden()
    text = config.read_text()
    assert "daily_usd = 2.5" in text and "[prices." in text and "[providers.local]" in text


def test_zero_megabytes_is_refused_in_place_not_saved_and_reverted(chromium, he):
    options = open_options(chromium)
    wait_js(options, "document.getElementById('max-mb').value === '8'")
    field = options.locator("#max-mb")
    field.fill("0")
    field.press("Tab")
    options.wait_for_selector("#max-mb-error:not([hidden])")
    assert "from 1 to 60" in options.inner_text("#max-mb-error")
    assert options.inner_text("#saved") != "Saved."
    assert field.input_value() == "0"
    settings = chromium.bg("chrome.storage.local.get('settings')").get("settings") or {}
    assert settings.get("maxCaptureBytes", 8 * 1024 * 1024) == 8 * 1024 * 1024
    field.fill("12")
    field.press("Tab")
    wait_for(lambda: chromium.bg("chrome.storage.local.get('settings')")["settings"]["maxCaptureBytes"]
             == 12 * 1024 * 1024, 5, what="12 MB to be saved")
    assert options.locator("#max-mb-error").is_hidden()


def test_spend_per_day_is_drawn_as_svg_bars_from_local_data(chromium, he, site, tmp_path):
    page_file = tmp_path / "page.html"
    page_file.write_text("<html><body><p>Some words to summarise for the chart.</p></body></html>")
    for _ in range(2):
        proc = he.cli("run", "e2e-digest", "--input", str(page_file), "--wait")
        assert proc.returncode == 0, proc.stderr
    options = open_options(chromium)
    options.wait_for_selector("#spend-chart svg rect", state="attached")
    today = datetime.now().astimezone().date().isoformat()
    bars = options.evaluate("""() => [...document.querySelectorAll('#spend-chart svg rect')].map(r =>
        ({date: r.dataset.date, name: r.dataset.name, cost: Number(r.dataset.cost), h: Number(r.getAttribute('height'))}))""")
    assert [b["date"] for b in bars] == [today] and bars[0]["name"] == "local" and bars[0]["h"] > 0
    assert bars[0]["cost"] == pytest.approx(he.cli_json("spend", "--json")["today"]) and bars[0]["cost"] > 0
    assert "over 30 days" in options.inner_text("#spend-note")
    options.check('input[name="spend-by"][value="by_workflow"]')
    wait_js(options, "document.querySelector('#spend-chart svg').dataset.by === 'by_workflow'")
    names = options.evaluate("() => [...document.querySelectorAll('#spend-chart svg rect')].map(r => r.dataset.name)")
    assert names == ["e2e-digest"]
    assert "e2e-digest" in options.inner_text("#spend-chart .legend")
    shot(options, "options-spend-light")
    # Narrow: the SVG shrinks, its labels keep their 11px on screen.
    options.set_viewport_size({"width": 400, "height": 900})
    options.emulate_media(color_scheme="dark")
    wait_js(options, "document.querySelector('#spend-chart .tick').getBoundingClientRect().height > 9")
    shot(options, "options-spend-narrow-dark")


def test_the_automatic_default_workflow_is_named_as_the_background_picks_it(chromium_factory, he):
    from e2e_world import TEMPLATES

    (he.he_home / "templates" / "page-digest.yaml").write_text(
        TEMPLATES["e2e-digest"].replace("name: e2e-digest", "name: page-digest"), encoding="utf-8")
    options = open_options(chromium_factory())
    options.wait_for_selector('#default-workflow option[value="page-digest"]', state="attached")
    # Not "the first workflow in the list" (e2e-digest): the shortcut sends to page-digest.
    wait_js(options, "document.querySelector('#default-workflow option[value=\"\"]').textContent"
                     " === 'Automatic (now page-digest)'")
    assert options.input_value("#default-workflow") == ""
