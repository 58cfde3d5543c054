"""The extension's modules: what one exports another imports, and where the host and the
extension share a rule (money, statuses) both give the same answers.

The extension has no bundler and no linter run in the suite, so an export nobody imports
would stay unnoticed; the shared rules are run in node (install/dev-setup.sh installs it
for web-ext) on the same figures as the Python side.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from hybrid_engine import money
from hybrid_engine.states import RunStatus, StepStatus

EXTENSION = Path(__file__).resolve().parents[2] / "extension"
_IMPORT = re.compile(r'import\s*\{([^}]*)\}\s*from\s*"([^"]+)"')
_EXPORT = re.compile(r"^export (?:async )?(?:function\*?|const|let|class) (\w+)", re.M)
_EXPORT_LIST = re.compile(r"^export \{([^}]*)\}", re.M)


def _sources() -> dict[Path, str]:
    return {p.resolve(): p.read_text(encoding="utf-8") for p in EXTENSION.rglob("*.js")}


_DYNAMIC_IMPORT = re.compile(r'import\("([^"]+)"\)')


def _imported() -> dict[Path, set[str]]:
    names: dict[Path, set[str]] = {}
    for path, text in _sources().items():
        for listed, target in _IMPORT.findall(text):
            module = (path.parent / target).resolve()
            names.setdefault(module, set()).update(
                n.split(" as ")[0].strip() for n in listed.split(",") if n.strip())
        # A module loaded on demand: its exports are used as `<module>.name` in the importer.
        for target in _DYNAMIC_IMPORT.findall(text):
            module = (path.parent / target).resolve()
            names.setdefault(module, set()).update(re.findall(r"\.(\w+)\(", text))
    return names


def test_every_export_of_an_extension_module_is_imported_somewhere():
    imported = _imported()
    unused = []
    for path, text in _sources().items():
        exported = _EXPORT.findall(text) + [n.strip() for group in _EXPORT_LIST.findall(text)
                                            for n in group.split(",") if n.strip()]
        unused += [f"{path.relative_to(EXTENSION)}: {name}" for name in exported
                   if name not in imported.get(path, set())]
    assert unused == []


def _node(module: str, body: str):
    """What `body` (which may use the module's exports as `m`) prints as JSON, run in node."""
    url = (EXTENSION / module).as_uri()
    script = f"const m = await import({json.dumps(url)});\nconsole.log(JSON.stringify({body}));"
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


MONEY_CASES = json.loads((Path(__file__).resolve().parents[1] / "data" / "money_cases.json").read_text())["cases"]


def test_extension_formats_money_by_the_shared_table():
    amounts = [row[0] for row in MONEY_CASES]
    js = _node("lib/format.js", f"{json.dumps(amounts)}.map((x) => [m.usd(x), m.usdBudget(x)])")
    assert js == [[spent, budget] for _, spent, budget in MONEY_CASES]


def test_extension_formats_money_as_the_host_does():
    js = _node("lib/format.js", f"{json.dumps(FIGURES)}.map((x) => [m.usd(x), m.usdBudget(x)])")
    assert js == [[money.usd(x), money.usd_budget(x)] for x in FIGURES]


# Amounts beyond the table, so a drift between the two sides shows even where no row names it.
FIGURES = [3.3e-6, 7.77e-5, 0.00049999, 0.0031415, 0.049999, 0.995, 2.675, 99.999, 0.1 + 0.2]


def test_extension_spells_the_statuses_and_terminal_runs_as_the_host_does():
    js = _node("lib/states.js", "[m.RunStatus, m.StepStatus, Object.values(m.RunStatus).filter(m.isTerminalRun)]")
    assert js[0] == {s.name: s.value for s in RunStatus}
    assert js[1] == {s.name: s.value for s in StepStatus}
    assert set(js[2]) == {s.value for s in RunStatus if s.is_terminal}


DAYS = [{"date": "2026-03-01", "total": 0, "by_provider": {}, "by_workflow": {}},
        {"date": "2026-03-02", "total": 0.3, "by_provider": {"openai": 0.2, "deepseek": 0.1},
         "by_workflow": {"digest": 0.3}},
        {"date": "2026-03-03", "total": 0.0000004, "by_provider": {"openai": 0.0000004},
         "by_workflow": {"digest": 0.0000004}}]


def test_spend_chart_draws_a_bar_for_each_provider_on_each_day_with_spend():
    out = _node("options/spendchart.js", f"m.spendBars({json.dumps(DAYS)}, 'by_provider')")
    assert [(b["date"], b["name"]) for b in out["bars"]] == [
        ("2026-03-02", "openai"), ("2026-03-02", "deepseek"), ("2026-03-03", "openai")]
    assert out["max"] == 0.3
    openai, deepseek, tiny = out["bars"]
    assert openai["height"] == 2 * deepseek["height"]  # proportional to cost
    assert deepseek["y"] + deepseek["height"] == openai["y"]  # stacked
    assert tiny["height"] >= 2  # a day that cost something never draws as nothing
    assert openai["color"] == tiny["color"] != deepseek["color"]  # one colour per provider


def test_spend_chart_splits_by_workflow_when_asked():
    out = _node("options/spendchart.js", f"m.spendBars({json.dumps(DAYS)}, 'by_workflow')")
    assert {b["name"] for b in out["bars"]} == {"digest"} and len(out["bars"]) == 2


def test_a_fetched_file_without_a_length_stops_being_read_once_past_the_capture_limit():
    # A server's endless body: 1 KiB chunks for ever, no Content-Length; the limit is 4 KiB.
    out = _node("lib/pdf.js", """await (async () => {
      let pulled = 0;
      globalThis.fetch = async () => new Response(new ReadableStream({
        pull(controller) { pulled += 1; controller.enqueue(new Uint8Array(1024)); },
      }), { headers: { "content-type": "application/pdf" } });
      try {
        await m.fetchBytes("https://files.example/endless.pdf", { maxBytes: 4096, what: "the PDF" });
        return { error: null, pulled };
      } catch (err) {
        return { error: err.message, pulled };
      }
    })()""")
    assert "over the" in out["error"] and "capture limit" in out["error"]
    assert out["pulled"] <= 8


def test_a_pdf_link_to_a_local_file_is_not_fetched_unless_the_page_is_local_too():
    out = _node("lib/pdf.js", """[
      m.isPdfUrl("file:///home/me/tax-return.pdf", { local: false }),
      m.isPdfUrl("https://files.example/report.pdf", { local: false }),
      m.isPdfUrl("file:///home/me/tax-return.pdf"),
    ]""")
    assert out == [False, True, True]


_PDF_FETCH = """globalThis.fetch = async () => new Response(
      new TextEncoder().encode("%PDF-1.4\\\\n" + "x".repeat(3000)),
      { headers: { "content-type": "application/pdf" } });"""


def test_a_pdf_link_with_a_malformed_escape_in_its_name_is_captured_under_that_name():
    out = _node("lib/pdf.js", f"""await (async () => {{
      {_PDF_FETCH}
      const page = await m.pdfPage("https://files.example/report%E0%A4%A.pdf", {{ maxBytes: 1e6, kind: "pdf" }});
      return [page.title, page.source_url];
    }})()""")
    assert out == ["report%E0%A4%A.pdf", "https://files.example/report%E0%A4%A.pdf"]


def test_a_pdf_at_a_data_address_is_not_titled_or_addressed_by_its_own_bytes():
    out = _node("lib/pdf.js", f"""await (async () => {{
      {_PDF_FETCH}
      const page = await m.pdfPage("data:application/pdf;base64,JVBERi0xLjQK" + "eHh4".repeat(1000),
                                   {{ maxBytes: 1e6, kind: "pdf" }});
      return [page.title, page.source_url, page.metadata.pdf_url];
    }})()""")
    assert out == ["document.pdf", None, "data:"]


def test_the_tabs_permission_is_optional_and_the_popup_preloads_every_module_it_imports():
    manifest = json.loads((EXTENSION / "manifest.json").read_text(encoding="utf-8"))
    assert "tabs" not in manifest["permissions"] and "tabs" in manifest["optional_permissions"]
    html = (EXTENSION / "popup" / "popup.html").read_text(encoding="utf-8")
    preloaded = {(EXTENSION / "popup" / href).resolve() for href in re.findall(r'rel="modulepreload" href="([^"]+)"', html)}
    sources = _sources()
    wanted, todo = set(), [(EXTENSION / "popup" / "popup.js").resolve()]
    while todo:  # popup.js and its static imports (detail.js is loaded when a run is opened)
        path = todo.pop()
        if path in wanted:
            continue
        wanted.add(path)
        todo += [(path.parent / spec).resolve() for _, spec in _IMPORT.findall(sources[path])]
    assert preloaded == wanted
