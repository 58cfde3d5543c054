"""The acceptance flow, as a person goes through it, one list of steps for every browser.

Two pages are sent from the popup; one is found in the library by a word of its summary and
saved as a note in the folder set in Options (its front matter read back from the file);
the first page, visited again, says it was sent, and its earlier result is taken again at
$0 without a model call; a workflow whose provider has no key is red before sending, the key
is set in Options, and the popup turns green.

`flow(browser, world, site)` drives a Browser of flow_browsers.py (Chromium through
Playwright, Firefox through Marionette), which give the same few verbs: views of extension
pages, web tabs, clicks, typing, the badge. Each step asserts what the page shows and takes
a screenshot.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import yaml

from e2e_world import GUARD_S, MODEL, ROOT, usd, wait_for
from hybrid_engine.safepath import name_piece  # noqa: E402 - e2e_world puts the host on the path

CORPUS_PAGE = ROOT / "tests" / "data" / "corpus" / "readability" / "title-en-dash" / "source.html"
PAGE_TWO_TITLE = "Lorem ipsum dolor sit amet – My website"

SUMMARY_ONE = "The engine keeps a ledger of heliotrope tokens for every durable step."
SUMMARY_TWO = "A placeholder page whose paragraphs read like basalt columns: the same words twice."
NOTE_TEXT = "- Lorem ipsum, twice\n- basalt columns of placeholder text"
SEARCH_WORD = "basalt"
KEY = "sk-flow-openai-0123456789abcdef"

NOTES_TEMPLATE = f"""\
name: e2e-notes
description: Summarise the page (fake local model) and keep the summary as a note
steps:
  - id: page
    action: capture
  - id: text
    action: extract_text
    dependencies: [page]
    params:
      html: "{{{{ steps.page.outputs.content }}}}"
  - id: summary
    action: local_chat
    dependencies: [text]
    params:
      model: {MODEL}
      prompt: "Summarise:\\n\\n{{{{ steps.text.outputs.text }}}}"
      max_tokens: 200
  - id: note
    action: save_note
    dependencies: [summary]
    params:
      content: "{{{{ steps.summary.outputs.text }}}}"
      tags: [clipping, e2e flow]
"""

# The send line says "Run started." for a few seconds only: every text it shows is kept, so
# a slow poll cannot miss one.
WATCH_SEND_STATUS = """(() => {
  const s = document.getElementById('send-status');
  const root = document.documentElement;
  root.dataset.said = '[]';
  new MutationObserver(() => {
    const said = JSON.parse(root.dataset.said);
    said.push({kind: s.dataset.kind || '', text: s.textContent, runId: s.dataset.runId || ''});
    root.dataset.said = JSON.stringify(said);
  }).observe(s, {attributes: true, childList: true, characterData: true, subtree: true});
  return true;
})()"""

SENT_OUTCOME = """JSON.parse(document.documentElement.dataset.said || '[]')
  .find(s => s.kind === 'ok' || s.kind === 'error') || null"""


# ---- the steps --------------------------------------------------------------------------------

def flow(browser, he, site) -> dict:
    """The whole acceptance flow in `browser`; the seconds each step took."""
    (site.root / "flow-corpus.html").write_bytes(CORPUS_PAGE.read_bytes())
    one, two = site.url("article.html"), site.url("flow-corpus.html")
    timings: dict[str, float] = {}
    steps = [
        ("send two pages", lambda s: s.update(send_two_pages(browser, he, one, two))),
        ("find by summary", lambda s: find_in_library(browser, s)),
        ("save as note", lambda s: save_as_note(browser, he, s, two)),
        ("already sent", lambda s: see_already_sent(browser, s, one)),
        ("reuse at $0", lambda s: reuse_at_no_cost(browser, he, s, one)),
        ("key from options", lambda s: set_key_and_see_green(browser, he, one)),
    ]
    state: dict = {}
    for name, step in steps:
        started = time.monotonic()
        step(state)
        timings[name] = round(time.monotonic() - started, 1)
    return timings


def send_two_pages(browser, he, one: str, two: str) -> dict:
    browser.visit(one)
    browser.visit(two)
    runs = {}
    for url, summary, title in ((one, SUMMARY_ONE, "The Durable Engine"), (two, SUMMARY_TWO, PAGE_TWO_TITLE)):
        he.fake.script("local", text=summary)
        popup = open_popup(browser, url)
        popup.wait("document.getElementById('page-title').textContent === arg", f"the popup to name {title!r}", title)
        run_id = send(popup, "e2e-digest")
        row = f'#run-list li[data-run-id="{run_id}"]'
        popup.wait(f"!!document.querySelector('{row}[data-status=\"COMPLETED\"] .progress[data-percent=\"100\"]')",
                   "the run to complete in the popup")
        cost = he.run_doc(run_id)["metrics"]["total_cost"]
        assert cost > 0
        assert popup.text(f"{row} .cost") == usd(cost)
        assert popup.text(f"{row} .name") == title  # named by its page, not its workflow
        popup.shot(f"flow-{browser.name}-1-sent-{len(runs) + 1}")
        popup.close()
        runs[url] = run_id
    assert len(model_calls(he)) == 2
    return {"first": runs[one], "second": runs[two]}


def find_in_library(browser, s: dict) -> None:
    library = browser.view("library/library.html", size=(900, 800))
    listed = "[...document.querySelectorAll('#results li')].map(li => li.dataset.runId)"
    library.wait(f"{listed}.length === 2", "both runs in the library")
    library.fill("#query", SEARCH_WORD, leave=False)  # searched as it is typed
    library.wait(f"JSON.stringify({listed}) === JSON.stringify([arg])", "the search to find the second page only",
                 s["second"])
    row = f'#results li[data-run-id="{s["second"]}"]'
    assert library.text(f"{row} .title") == PAGE_TWO_TITLE
    assert library.text(f"{row} .snippet mark").lower() == SEARCH_WORD
    assert library.text("#count") == "1 run"
    library.shot(f"flow-{browser.name}-2-library-found")
    result = library.follow(f"{row} button[data-action=\"open\"]")  # its result, in a tab of its own
    show_result(result, PAGE_TWO_TITLE, SUMMARY_TWO)
    result.shot(f"flow-{browser.name}-2-library-opened")
    result.close()
    s["library"] = library


def save_as_note(browser, he, s: dict, two: str) -> None:
    vault = he.dir / "vault"
    vault.mkdir()
    options = browser.view("options/options.html", size=(720, 1100))
    options.wait("!document.getElementById('host-settings').hidden", "the host's settings in Options")
    options.fill("#set-notes-folder", str(vault))
    options.wait("document.getElementById('settings-saved').textContent === 'Saved to config.toml.'",
                 "the notes folder to be saved")
    assert f'folder = "{vault}"' in (he.he_home / "config.toml").read_text(encoding="utf-8")
    options.shot(f"flow-{browser.name}-3-options-notes-folder")
    options.close()

    # From the library's row, to the page it names, and from there to the notes workflow.
    library = s.pop("library")
    page = library.follow(f'#results li[data-run-id="{s["second"]}"] a.source')
    assert page.url == two, page.url
    library.close()
    he.fake.script("local", text=NOTE_TEXT)
    before = int(time.time() * 1000) / 1000  # the browser stamps its capture in whole milliseconds
    popup = open_popup(browser, two)
    popup.wait("!document.getElementById('already').hidden", "the page to be known as sent")
    choose(popup, "e2e-notes")
    assert popup.js("document.getElementById('reuse-choice').hidden")  # nothing of e2e-notes' to reuse
    run_id = send(popup, "e2e-notes")
    doc = he.wait_run(run_id)
    row = f'#run-list li[data-run-id="{run_id}"]'
    popup.wait(f"!!document.querySelector('{row}[data-status=\"COMPLETED\"]')", "the note's run to complete")
    popup.shot(f"flow-{browser.name}-3-note-saved")
    popup.close()

    notes = sorted(vault.glob("*.md"))
    assert [n.name for n in notes] == [f"{name_piece(PAGE_TWO_TITLE)}.md"], notes  # named by the page's title
    meta, body = front_matter(notes[0])
    assert meta["title"] == PAGE_TWO_TITLE
    assert meta["url"] == two
    assert meta["workflow"] == "e2e-notes"
    assert meta["models"] == [MODEL]
    assert meta["tags"] == ["clipping", "e2e-flow"]
    run = he.run_doc(run_id)
    assert meta["cost"] == usd(run["metrics"]["total_cost"]) and run["metrics"]["total_cost"] > 0
    captured = meta["captured_at"]
    captured = captured if isinstance(captured, datetime) else datetime.fromisoformat(str(captured))
    assert before <= captured.timestamp() <= time.time(), (before, captured)  # when the popup read the page
    assert body.strip() == NOTE_TEXT
    assert doc["status"] == "COMPLETED"


def see_already_sent(browser, s: dict, one: str) -> None:
    again = one + "#again"  # a fragment is the same page
    browser.visit(again)
    tab = browser.tab_id(again)
    text = wait_for(lambda: browser.badge(tab)[0] == "\u2713" and browser.badge(tab), GUARD_S, 0.2,
                    "the badge to say the page was sent")
    title = text[1]
    assert title.startswith("Already sent: e2e-digest,") and "$" in title, title
    popup = open_popup(browser, again)
    popup.wait("!document.getElementById('already').hidden", "the already-sent card")
    listed = popup.text("#already-list")
    assert "e2e-digest · completed" in listed, listed
    choose(popup, "e2e-digest")  # the workflow that did this page: its result may be taken again
    popup.wait("!document.getElementById('reuse-choice').hidden", "the choice to reuse the result")
    assert popup.js("document.querySelector('input[name=\"reuse\"]:checked').value") == "reuse"
    popup.shot(f"flow-{browser.name}-4-already-sent")
    s["popup"] = popup


def reuse_at_no_cost(browser, he, s: dict, one: str) -> None:
    popup = s.pop("popup")
    calls = len(model_calls(he))
    runs = [r["id"] for r in he.cli_json("runs", "--json")["runs"]]
    reused = send(popup, "e2e-digest")
    assert reused == s["first"]
    said = popup.js(SENT_OUTCOME)
    assert said["text"] == "Same page as before: reused its result at $0.", said
    assert len(model_calls(he)) == calls  # no model was asked
    assert [r["id"] for r in he.cli_json("runs", "--json")["runs"]] == runs  # and no run was made
    popup.shot(f"flow-{browser.name}-5-reused")
    popup.click(f'#already-list button[data-run-id="{s["first"]}"]')  # the earlier result, shown again
    show_result(popup, "The Durable Engine", SUMMARY_ONE)
    popup.shot(f"flow-{browser.name}-5-reused-result")
    popup.close()


def set_key_and_see_green(browser, he, one: str) -> None:
    popup = open_popup(browser, one + "#again")
    preflight = '#preflight li[data-step-id="summary"]'
    # page-to-notes' own summary step (gpt-4o-mini), not the one of the workflow shown before it.
    said_for = f"[document.querySelector('{preflight}')].filter(li => li && li.textContent.includes('gpt-4o-mini'))"
    choose(popup, "page-to-notes")
    popup.wait(f"{said_for}.some(li => li.dataset.ok === 'false')", "pre-flight to be red")
    said = popup.text(preflight)
    assert "No OpenAI key: add it in Settings" in said, said
    assert popup.js("document.getElementById('estimate').dataset.ok") == "false"
    assert popup.js("document.getElementById('reuse-choice').hidden")  # page-to-notes never had this page
    popup.shot(f"flow-{browser.name}-6-preflight-red")

    options = popup.follow(f"{preflight} a")
    assert options.url.endswith("/options/options.html"), options.url
    options.wait("!document.getElementById('key-form').hidden", "the key form")
    options.select("#key-provider", "openai")
    options.fill("#key-input", KEY, leave=False)
    options.click("#key-save")
    options.wait("document.getElementById('key-status').dataset.kind === 'ok'", "the key to be stored")
    keys_file = he.he_home / "keys.json"
    assert f"openai: key set (from {keys_file})" in options.text("#providers").splitlines()
    assert options.js("document.getElementById('key-input').value") == ""
    assert json.loads(keys_file.read_text(encoding="utf-8")) == {"openai": KEY}
    options.shot(f"flow-{browser.name}-6-options-key-set")
    options.close()
    popup.close()

    popup = open_popup(browser, one + "#again")  # the popup opened again, as after a click on the button
    choose(popup, "page-to-notes")
    popup.wait(f"{said_for}.some(li => li.dataset.ok === 'true')", "pre-flight to turn green")
    assert popup.text(preflight).endswith("key set")
    assert popup.js("document.getElementById('estimate').dataset.ok") == "true"
    popup.shot(f"flow-{browser.name}-6-preflight-green")
    popup.close()


# ---- helpers shared by the steps ----------------------------------------------------------------

def open_popup(browser, url: str):
    popup = browser.view(f"popup/popup.html?tab={browser.tab_id(url)}", size=(400, 640))
    popup.wait("document.getElementById('connection').dataset.status === 'connected'", "the host to be reached")
    return popup


def choose(popup, template: str) -> None:
    popup.wait(f"!!document.querySelector('#workflow option[value=\"{template}\"]')", f"{template} to be offered")
    popup.select("#workflow", template)


def send(popup, template: str) -> str:
    """Choose `template`, wait for its estimate, press Send: the run id the popup names."""
    choose(popup, template)
    popup.wait("document.getElementById('estimate-cost').textContent.startsWith('Estimate:')", "the estimate")
    assert popup.js(WATCH_SEND_STATUS)
    popup.click("#send-button")
    said = popup.wait(SENT_OUTCOME, "the send to be answered")
    assert said["kind"] == "ok", said
    return said["runId"]


def show_result(view, title: str, summary: str) -> None:
    """A run's detail, opened on its result: the page's title and the model's summary."""
    view.wait("!document.getElementById('detail').hidden && !document.getElementById('result').hidden",
              "the run's result")
    view.wait("document.getElementById('output').textContent.includes(arg)", "the summary in the result", summary)
    assert view.text("#detail-title") == title


def model_calls(he) -> list:
    return [r for r in he.fake.requests if r.path.endswith("/chat/completions")]


def front_matter(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:200]
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def install_templates(he) -> None:
    """The notes workflow, and the bundled page-to-notes (an OpenAI model: a key is needed)."""
    (he.he_home / "templates" / "e2e-notes.yaml").write_text(NOTES_TEMPLATE, encoding="utf-8")
    shutil.copy(ROOT / "host" / "hybrid_engine" / "examples" / "page-to-notes.yaml", he.he_home / "templates")
