"""Real browsers, headless, with the extension loaded and the REAL host registered.

Fixtures
    fake_llm        tests/integration's loopback fake provider (local_chat goes there)
    site            a loopback HTTP server with the test pages (article, 1.2 MiB, 5 MB)
    he              one test's world: HOME, HYBRID_ENGINE_HOME with templates and config.toml,
                    a launcher that records each host's pid and argv, host manifests
    chromium        Playwright driving /usr/bin/chromium with the extension (see BROWSER-TESTING.md)

The extension under test is a copy of extension/ whose manifest adds one host permission,
http://127.0.0.1/*. The shipped extension reads pages only through activeTab (`tabs` shows it
a tab's address and title, not its page), which the browser grants
when a person clicks the toolbar button, a context-menu item or the shortcut; a headless
test cannot make those gestures, so the copy stands in for that grant. Nothing else differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extension"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("HYBRID_ENGINE_CHROMIUM", "/usr/bin/chromium")
FIREFOX = os.environ.get("HYBRID_ENGINE_FIREFOX", "/usr/bin/firefox-esr")

sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from fake_provider import FakeProvider  # noqa: E402
from polling import GUARD_MS, GUARD_S, wait_for  # noqa: E402,F401 - the tests import them from here
from hybrid_engine import install as he_install  # noqa: E402
from hybrid_engine.identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID  # noqa: E402
from hybrid_engine.money import usd  # noqa: E402,F401 - the popup's money format (extension/lib/format.js follows it)

EXT_ID = CHROME_EXTENSION_ID
EXT_ORIGIN = f"chrome-extension://{EXT_ID}"

# Prices for the fake local model, so that cost is known and not zero.
MODEL = "e2e-model"
INPUT_PER_MTOK = 1.25
OUTPUT_PER_MTOK = 7.5

TEMPLATES = {
    "e2e-digest": f"""\
name: e2e-digest
description: Extract the page's text and summarise it with a (fake) local model
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
      on_overflow: truncate
""",
    "e2e-echo": """\
name: e2e-echo
description: Give back exactly what was captured
steps:
  - id: page
    action: capture
  - id: echo
    action: template
    dependencies: [page]
    params:
      template: "{{ steps.page.outputs.content }}"
""",
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- the loopback model provider and web site ------------------------------------------------

@pytest.fixture(scope="session")
def fake_llm_server():
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_llm_server):
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


def _words(n_bytes: int, seed: int, extra: str = "") -> str:
    rng = random.Random(seed)
    vocab = ("engine workflow capture token cost browser host durable graph step local model page "
             "résumé naïve 東京 данные ⚙️ 🚀 quick brown fox").split()
    out, size = [], 0
    while size < n_bytes:
        w = rng.choice(vocab)
        out.append(w)
        size += len(w.encode()) + 1
        if len(out) % 17 == 0:
            out.append(extra)
    return " ".join(out)


ARTICLE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>The Durable Engine</title></head>
<body>
<header><nav><a href="/">Home</a></nav></header>
<article>
<h1>The Durable Engine</h1>
<p id="lead">Local-first workflows keep every step's tokens and cost.<br>
A second line of the lead paragraph.</p>
<p>Read <a id="link" href="/target.html">the full specification</a> before you start.</p>
<p><img id="img" src="/diagram.png" alt="A diagram of the step graph" width="40" height="20"></p>
<p>{body}</p>
</article>
</body></html>
"""

PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e5273f"
                        "f10000000049454e44ae426082")


def _big_page(title: str, n_bytes: int, seed: int) -> str:
    body = _words(n_bytes, seed)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f'<body><article><h1>{title}</h1><pre id="payload">{body}</pre></article></body></html>\n')


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "article.html").write_text(ARTICLE.format(body=_words(3000, 1)), encoding="utf-8")
    (root / "target.html").write_text("<!DOCTYPE html><title>Target</title><p>target</p>", encoding="utf-8")
    (root / "diagram.png").write_bytes(PNG_1PX)
    (root / "big.html").write_text(_big_page("A long page", 1_200_000, 2), encoding="utf-8")
    (root / "five.html").write_text(_big_page("Five megabytes", 5_000_000, 3), encoding="utf-8")
    for page in (ROOT / "tests" / "data" / "privacy").glob("*.html"):  # hidden instructions, and the like
        shutil.copy(page, root / page.name)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield type("Site", (), {"root": root, "base": base, "url": lambda self, p: f"{base}/{p}"})()
    server.shutdown()
    server.server_close()


# ---- one test's world ----------------------------------------------------------------------

@dataclass
class World:
    dir: Path
    home: Path  # HOME of the browser (Firefox reads its host manifests here)
    he_home: Path  # HYBRID_ENGINE_HOME
    launcher: Path
    pids_file: Path
    fake: FakeProvider
    started: list = field(default_factory=list)

    def env(self) -> dict:
        env = dict(os.environ)
        env["HOME"] = str(self.home)
        env["HYBRID_ENGINE_HOME"] = str(self.he_home)
        env["PYTHONPATH"] = str(ROOT / "host") + os.pathsep + env.get("PYTHONPATH", "")
        for var in ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                    "HYBRID_ENGINE_LOCAL_BASE_URL", "OPENAI_BASE_URL"):
            env.pop(var, None)
        return env

    def cli(self, *args: str, timeout: float = GUARD_S) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hybrid_engine", *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout)

    def cli_json(self, *args: str):
        proc = self.cli(*args)
        assert proc.returncode == 0, f"hybrid-engine {' '.join(args)}: {proc.returncode}\n{proc.stderr}"
        return json.loads(proc.stdout)

    def run_doc(self, run_id: str) -> dict:
        """The whole run, outputs uncut, straight from the store (`hybrid-engine export`)."""
        return self.cli_json("export", run_id)

    def wait_run(self, run_id: str, status: str = "COMPLETED", timeout: float = GUARD_S) -> dict:
        def done():
            doc = self.cli_json("show", run_id, "--json")
            return doc if doc["status"] == status else None
        return wait_for(done, timeout, 0.3, f"run {run_id} to be {status}")

    def host_pids(self) -> list[int]:
        if not self.pids_file.exists():
            return []
        return [int(x) for x in self.pids_file.read_text().split()]

    def host_argv(self, pid: int) -> list[str]:
        return (self.dir / f"argv-{pid}.txt").read_text().splitlines()

    # host registration --------------------------------------------------------------------
    def register_chromium(self, profile: Path) -> Path:
        folder = profile / "NativeMessagingHosts"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "hybrid_engine.json"
        path.write_text(json.dumps(he_install.build_manifest(he_install.CHROMIUM, self.launcher)), encoding="utf-8")
        return path

    def register_firefox(self) -> Path:
        folder = self.home / ".mozilla" / "native-messaging-hosts"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "hybrid_engine.json"
        path.write_text(json.dumps(he_install.build_manifest(he_install.FIREFOX, self.launcher)), encoding="utf-8")
        return path


@pytest.fixture
def he(tmp_path, fake_llm) -> World:
    home = tmp_path / "home"
    he_home = tmp_path / "he-home"
    (he_home / "templates").mkdir(parents=True)
    home.mkdir()
    for name, text in TEMPLATES.items():
        (he_home / "templates" / f"{name}.yaml").write_text(text, encoding="utf-8")
    (he_home / "config.toml").write_text(
        f'[providers.local]\nbase_url = "{fake_llm.base_url("local")}"\n\n'
        f'[prices."{MODEL}"]\ninput_per_mtok = {INPUT_PER_MTOK}\noutput_per_mtok = {OUTPUT_PER_MTOK}\n\n'
        "[budgets]\ndaily_usd = 0.5\n", encoding="utf-8")
    launcher = tmp_path / "bin" / "hybrid-engine-host"
    launcher.parent.mkdir()
    pids = tmp_path / "host-pids"
    script = he_install.launcher_script(sys.executable, "linux", str(he_home))
    head, rest = script.split("\n", 1)
    # Record each host's pid and argv (what the browser passed), then exec the real host.
    record = (f"echo $$ >> {pids}\n"
              f"printf '%s\\n' \"$@\" > {tmp_path}/argv-$$.txt\n"
              f"PYTHONPATH={ROOT / 'host'}; export PYTHONPATH\n")
    launcher.write_text(head + "\n" + record + rest, encoding="utf-8")
    launcher.chmod(0o755)
    world = World(dir=tmp_path, home=home, he_home=he_home, launcher=launcher, pids_file=pids, fake=fake_llm)
    yield world
    # Hosts and the workers they hand work to must not outlive the test.
    for pid in world.host_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _kill_workers(he_home)


def _kill_workers(he_home: Path) -> None:
    """Detached `worker --until-idle` processes whose environment names this test's home."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"hybrid_engine" in cmd and f"HYBRID_ENGINE_HOME={he_home}".encode() in env:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- the extension copy under test -----------------------------------------------------------

@pytest.fixture(scope="session")
def extension_dir(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("ext") / "extension"
    shutil.copytree(EXTENSION, dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    manifest["host_permissions"] = ["http://127.0.0.1/*"]
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return dest


# ---- Chromium ------------------------------------------------------------------------------

@pytest.fixture(scope="module")  # stopped per module: its event loop must not outlive the browser tests
def playwright_session():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


class Chromium:
    def __init__(self, pw, world: World, extension: Path, register: bool = True):
        self.world = world
        self.profile = world.dir / "chromium-profile"
        self.profile.mkdir()
        if register:
            world.register_chromium(self.profile)
        self.launched = time.monotonic()
        self.ctx = pw.chromium.launch_persistent_context(
            str(self.profile), executable_path=CHROMIUM, headless=True, env=world.env(),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--disable-extensions-except={extension}", f"--load-extension={extension}"])
        self.ctx.set_default_timeout(GUARD_MS)  # a guard against hanging, never a bound (polling.GUARD_S)
        self.ctx.set_default_navigation_timeout(GUARD_MS)
        self.sw = self.ctx.service_workers[0] if self.ctx.service_workers else self.ctx.wait_for_event("serviceworker")
        assert self.sw.url.startswith(EXT_ORIGIN), self.sw.url

    def register(self) -> Path:
        return self.world.register_chromium(self.profile)

    def worker(self):
        """The live service worker (a new one if Chromium restarted it)."""
        for sw in self.ctx.service_workers:
            if sw.url.startswith(EXT_ORIGIN):
                self.sw = sw
        return self.sw

    def bg(self, expression: str, arg=None):
        """Evaluate in the service worker, after its start-up promise."""
        return self.worker().evaluate(f"async (arg) => {{ await self.hybrid.ready; return await ({expression}); }}", arg)

    def open(self, url: str):
        page = self.ctx.new_page()
        page.goto(url)
        return page

    def tab_id(self, url: str) -> int:
        tabs = self.bg("chrome.tabs.query({})")
        for t in tabs:
            if t.get("url") == url:
                return t["id"]
        raise AssertionError(f"no tab with {url}: {tabs}")

    def popup(self, tab_url: str | None = None, dark: bool = False):
        page = self.ctx.new_page()
        page.set_viewport_size({"width": 400, "height": 640})
        page.emulate_media(color_scheme="dark" if dark else "light")
        query = f"?tab={self.tab_id(tab_url)}" if tab_url else ""
        page.goto(f"{EXT_ORIGIN}/popup/popup.html{query}")
        return page

    def wait_connected(self, timeout: float = GUARD_S):
        return wait_for(lambda: self.bg("self.hybrid.host.status") == "connected", timeout, 0.1,
                        "the extension to reach the host")

    def close(self):
        self.ctx.close()


@pytest.fixture
def chromium_factory(playwright_session, he, extension_dir):
    browsers: list[Chromium] = []

    def make(register: bool = True) -> Chromium:
        b = Chromium(playwright_session, he, extension_dir, register)
        browsers.append(b)
        return b

    yield make
    for b in browsers:
        try:
            b.close()
        except Exception:  # noqa: BLE001 - already closed by the test
            pass


@pytest.fixture
def chromium(chromium_factory) -> Chromium:
    return chromium_factory()


def wait_js(page, expression: str, timeout: float = GUARD_S):
    """page.wait_for_function without eval (extension pages forbid it): poll page.evaluate."""
    return wait_for(lambda: page.evaluate(f"() => ({expression})"), timeout, 0.05, expression)


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # The progress bars' width transitions, finished: a transition is an Animation to the DOM.
    page.evaluate("() => Promise.all(document.getAnimations().filter(a => a instanceof CSSTransition)"
                  ".map(a => a.finished.catch(() => null))).then(() => true)")
    page.screenshot(path=str(path), full_page=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shot_png(data: bytes, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(data)
    return path
