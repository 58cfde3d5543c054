"""Extraction with the live page's article: the figure, measured the way the extension runs.

Run: python bench/article_quality.py [CORPUS] [--save FILE] [--load FILE]
     (CORPUS default ../shared/corpus/readability, relative to the project root)

The corpus is Mozilla Readability's test suite: 130 real web pages (source.html) with the
reference extraction Firefox Reader View is tested against (expected.html). Each page is
served from 127.0.0.1 and opened in real headless Chromium with the extension loaded (every
other request is blocked: no network); the extension's own capture (`capturePage`, called in
its service worker) reads the page and runs the vendored Readability on a clone of the
rendered document, exactly as a click on "Send page to workflow" does. The host's
extract_main then gets the HTML and the article and chooses (hybrid_engine/article.py).

Printed: mean word F1 (tests/extract_score.py: bags of lowercased \\w+ words, F1 of their
overlap) against the visible text of expected.html, for trafilatura on the HTML alone, for
the article alone, and for the host's choice; and how often each side was chosen.
Caveat: the references are Readability's own output on the same pages (parsed by JSDOM,
scripts not run), so the article side has a home advantage on this corpus; the choice rule
only takes the article when trafilatura agrees with it on most of the words.
--save writes the captured articles to FILE (JSON) and --load reuses them without a browser.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests"))

from hybrid_engine.identity import CHROME_EXTENSION_ID  # noqa: E402

TARGET_F1 = 0.97


def serve(folder: Path) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    server.daemon_threads = True
    server.handle_error = lambda *args: None  # a page closed mid-response: not the bench's business
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def capture_in_chromium(corpus: Path, names: list[str]) -> dict[str, dict]:
    """{page: the extension's `page` (content, article, metadata)} for every page, in one browser."""
    from playwright.sync_api import sync_playwright

    server = serve(corpus)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    tmp = Path(tempfile.mkdtemp(prefix="article-bench-"))
    ext = tmp / "extension"
    shutil.copytree(ROOT / "extension", ext)
    manifest = json.loads((ext / "manifest.json").read_text(encoding="utf-8"))
    manifest["host_permissions"] = ["http://127.0.0.1/*"]  # what a click's activeTab grant gives
    (ext / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out: dict[str, dict] = {}
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp / "profile"), executable_path="/usr/bin/chromium", headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      f"--disable-extensions-except={ext}", f"--load-extension={ext}"])
            ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                      else route.abort())
            sw = ctx.service_workers[0] if ctx.service_workers else ctx.wait_for_event("serviceworker")
            assert sw.url.startswith(f"chrome-extension://{CHROME_EXTENSION_ID}"), sw.url
            page = ctx.new_page()
            for name in names:
                url = f"{base}/{name}/source.html"
                page.goto(url, wait_until="load")
                out[name] = sw.evaluate("""async (url) => {
                    const [tab] = await chrome.tabs.query({ url });
                    return (await self.hybrid.capturePage(tab)).page;
                }""", url)
            ctx.close()
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default="../shared/corpus/readability")
    ap.add_argument("--save", help="write the captured pages (JSON) here")
    ap.add_argument("--load", help="reuse pages captured by an earlier --save instead of a browser")
    args = ap.parse_args()

    from extract_score import pages, visible_text, word_f1
    from hybrid_engine.article import article_markdown as article_text
    from hybrid_engine.extract import extract_main

    corpus = (ROOT / args.corpus).resolve()
    folders = pages(corpus) if corpus.is_dir() else []
    if not folders:
        print(f"bench/article_quality.py: no pages at {corpus}/*/source.html", file=sys.stderr)
        return 2
    names = [p.name for p in folders]
    t0 = time.perf_counter()
    if args.load:
        captured = json.loads(Path(args.load).read_text(encoding="utf-8"))
    else:
        captured = capture_in_chromium(corpus, names)
    capture_s = time.perf_counter() - t0
    if args.save:
        Path(args.save).write_text(json.dumps(captured), encoding="utf-8")

    from hybrid_engine import article as article_mod

    html_only, article_only, chosen, picks, agreements = [], [], [], {}, []
    for folder in folders:
        reference = visible_text((folder / "expected.html").read_text(encoding="utf-8", errors="replace"))
        source = (folder / "source.html").read_text(encoding="utf-8", errors="replace")
        article = (captured.get(folder.name) or {}).get("article") or ""
        traf = extract_main(source)["text"]
        html_only.append(word_f1(traf, reference))
        article_only.append(word_f1(article_text(article), reference) if article else 0.0)
        agreements.append(article_mod._overlap(article_text(article), traf) if article else (-1.0, -1.0))
        result = extract_main(source, article=article)
        chosen.append(word_f1(result["text"], reference))
        picks[result["source"]] = picks.get(result["source"], 0) + 1

    with_article = sum(1 for c in captured.values() if c.get("article"))
    print(f"article_quality: {len(folders)} pages of {corpus}; captured in Chromium in {capture_s:.0f} s, "
          f"{with_article} with a Readability article")
    print(f"  trafilatura on the HTML alone  mean word F1 {statistics.mean(html_only):.4f}")
    print(f"  Readability article alone      mean word F1 {statistics.mean(article_only):.4f}")
    print(f"  the host's choice              mean word F1 {statistics.mean(chosen):.4f} (target {TARGET_F1}); "
          f"chosen: {', '.join(f'{k} {v}' for k, v in sorted(picks.items()))}")
    sweep = []
    for threshold in (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8):
        f1s = [a if agree >= threshold and agree >= 0 or contains >= article_mod.CONTAINS else h
               for a, h, (agree, contains) in zip(article_only, html_only, agreements)]
        sweep.append(f"{threshold:.1f}: {statistics.mean(f1s):.4f}")
    print(f"  the rule's threshold (article used when its word F1 with trafilatura's text is at least it, or "
          f"it holds {article_mod.CONTAINS:.0%} of trafilatura's words; the host uses {article_mod.AGREEMENT}):\n    {'   '.join(sweep)}")
    worse = sorted(((c - h, n) for c, h, n in zip(chosen, html_only, names) if c < h - 1e-9))
    print(f"  pages where the choice lost to trafilatura alone: {len([1 for c, h in zip(chosen, html_only) if c < h - 1e-9])}"
          f"{' (' + ', '.join(f'{n} {d:+.3f}' for d, n in worse) + ')' if worse else ''}")
    return 0 if statistics.mean(chosen) >= TARGET_F1 or len(folders) < 130 else 1


if __name__ == "__main__":
    sys.exit(main())
