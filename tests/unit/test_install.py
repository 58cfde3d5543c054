"""Registration, removal and diagnosis against a temporary HOME; path tables per OS.

Every test runs with HOME, HYBRID_ENGINE_HOME and PATH pointing into tmp_path, and
passes a temporary ``root`` wherever system folders or installed programs could be
looked at, so what is installed on the machine running the tests never matters.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hybrid_engine import identity, install
from hybrid_engine.errors import BadRequest
from hybrid_engine.install import CHROMIUM, FIREFOX, LINUX, MACOS, SYSTEM, USER, WINDOWS, MemoryRegistry

PINNED_ORIGIN = f"chrome-extension://{identity.CHROME_EXTENSION_ID}/"
OTHER_ID = "abcdefghijklmnopabcdefghijklmnop"
REPO = Path(__file__).resolve().parents[2]

LINUX_USER_DIRS = {
    "chrome": ".config/google-chrome/NativeMessagingHosts",
    "chromium": ".config/chromium/NativeMessagingHosts",
    "edge": ".config/microsoft-edge/NativeMessagingHosts",
    "brave": ".config/BraveSoftware/Brave-Browser/NativeMessagingHosts",
    "vivaldi": ".config/vivaldi/NativeMessagingHosts",
    "firefox": ".mozilla/native-messaging-hosts",
    "librewolf": ".librewolf/native-messaging-hosts",
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    root = tmp_path / "root"
    root.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HYBRID_ENGINE_HOME", str(data))
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return SimpleNamespace(home=home, data=data, root=root, bindir=bindir, tmp=tmp_path)


def read_manifest(path: Path) -> dict:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    return json.loads(raw.decode("utf-8"))


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def the(findings, code):
    matches = [f for f in findings if f.code == code]
    assert matches, f"no {code} in {[(f.code, f.path) for f in findings]}"
    return matches[0]


def write_fake_host(folder: Path, behaviour: str = "answer") -> Path:
    """A launcher standing in for `python -m hybrid_engine host`: it answers one hello frame."""
    script = folder / f"fake_host_{behaviour}.py"
    script.write_text(
        "import json, struct, sys, time\n"
        f"behaviour = {behaviour!r}\n"
        "if behaviour == 'exit':\n"
        "    sys.stderr.write('boom: no module named hybrid_engine.__main__\\n'); sys.exit(1)\n"
        "header = sys.stdin.buffer.read(4)\n"
        "message = json.loads(sys.stdin.buffer.read(struct.unpack('=I', header)[0]))\n"
        "if behaviour == 'silent':\n"
        "    time.sleep(30)\n"
        "reply = {'id': message['id'], 'ok': True,\n"
        "         'result': {'version': 'test', 'protocol': 1, 'capabilities': [], 'argv': sys.argv[1:]}}\n"
        "body = json.dumps(reply).encode()\n"
        "sys.stdout.buffer.write(struct.pack('=I', len(body)) + body)\n"
        "sys.stdout.buffer.flush()\n"
        "sys.stdin.buffer.read()\n"
    )
    launcher = folder / f"fake-launcher-{behaviour}"
    launcher.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} \"$@\"\n")
    launcher.chmod(0o755)
    return launcher


# ---- install on Linux, user level -------------------------------------------

@pytest.mark.parametrize("browser", sorted(LINUX_USER_DIRS))
def test_install_writes_a_valid_manifest_for_each_linux_browser(env, browser):
    report = install.install(browsers=[browser], root=env.root)
    assert report.ok, report.errors
    manifest_path = env.home / LINUX_USER_DIRS[browser] / "hybrid_engine.json"
    manifest = read_manifest(manifest_path)
    assert manifest["name"] == "hybrid_engine"
    assert manifest["type"] == "stdio"
    assert manifest["path"] == str(env.data / "bin" / "hybrid-engine-host")
    assert os.path.isabs(manifest["path"])
    if install.BROWSERS[browser].family == CHROMIUM:
        assert manifest["allowed_origins"] == [PINNED_ORIGIN]
        assert "allowed_extensions" not in manifest
    else:
        assert manifest["allowed_extensions"] == [identity.FIREFOX_EXTENSION_ID]
        assert "allowed_origins" not in manifest


def test_install_for_every_linux_browser_at_once_then_uninstall_leaves_nothing(env):
    report = install.install(browsers=list(LINUX_USER_DIRS), root=env.root)
    assert report.ok and len(report.registrations) == len(LINUX_USER_DIRS)
    for rel in LINUX_USER_DIRS.values():
        assert read_manifest(env.home / rel / "hybrid_engine.json")["name"] == "hybrid_engine"
    result = install.uninstall()
    assert result.ok and len(result.removed) == len(LINUX_USER_DIRS)
    for rel in LINUX_USER_DIRS.values():
        assert not (env.home / rel / "hybrid_engine.json").exists()
    assert not (env.data / "bin" / "hybrid-engine-host").exists()
    assert not (env.data / "installed.json").exists()


def test_launcher_runs_the_absolute_interpreter_and_is_executable(env):
    install.install(browsers=["chrome"], root=env.root)
    launcher = env.data / "bin" / "hybrid-engine-host"
    text = launcher.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert f'exec {shlex.quote(os.path.abspath(sys.executable))} -m hybrid_engine host "$@"' in text
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755


def test_launcher_carries_hybrid_engine_home_because_browsers_drop_the_environment(env):
    install.install(browsers=["chrome"], root=env.root)
    text = (env.data / "bin" / "hybrid-engine-host").read_text()
    assert f"HYBRID_ENGINE_HOME={shlex.quote(str(env.data))}; export HYBRID_ENGINE_HOME" in text


def test_launcher_works_with_an_empty_path_and_passes_browser_arguments(env):
    fake_python = env.tmp / "python with space"
    fake_python.write_text('#!/bin/sh\necho "$@"; echo "home=$HYBRID_ENGINE_HOME"\n')
    fake_python.chmod(0o755)
    install.install(browsers=["chrome"], root=env.root, python=str(fake_python))
    out = subprocess.run([str(env.data / "bin" / "hybrid-engine-host"), PINNED_ORIGIN], env={},
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"-m hybrid_engine host {PINNED_ORIGIN}", f"home={env.data}"]


def test_install_without_browsers_writes_only_for_browsers_present(env):
    (env.home / ".config" / "google-chrome").mkdir(parents=True)
    (env.home / ".mozilla" / "firefox").mkdir(parents=True)
    report = install.install(root=env.root)
    written = {b for r in report.registrations for b in r.browsers}
    assert written == {"chrome", "firefox"}
    assert not (env.home / ".config" / "chromium").exists()
    assert {s["browser"] for s in report.skipped} == {"chromium", "edge", "brave", "vivaldi", "librewolf"}


def test_install_detects_a_browser_by_its_program_on_path(env):
    program = env.bindir / "brave-browser"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    report = install.install(root=env.root)
    assert [r.browsers for r in report.registrations] == [["brave"]]


def test_install_detects_a_browser_by_its_system_install_folder(env):
    (env.root / "opt" / "microsoft" / "msedge").mkdir(parents=True)
    report = install.install(root=env.root)
    assert [r.browsers for r in report.registrations] == [["edge"]]


def test_install_with_no_browser_present_writes_nothing_and_says_how_to_name_one(env):
    report = install.install(root=env.root)
    assert report.registrations == []
    assert any("--browser" in n for n in report.notes)
    assert not (env.home / ".config").exists()


def test_install_verifies_and_records_what_it_wrote(env):
    install.install(browsers=["chrome", "firefox"], root=env.root)
    record = json.loads((env.data / "installed.json").read_text())
    assert {Path(r["manifest"]).parent.name for r in record["registrations"]} == {
        "NativeMessagingHosts", "native-messaging-hosts"}
    assert record["launcher"] == str(env.data / "bin" / "hybrid-engine-host")
    assert record["python"] == os.path.abspath(sys.executable)


def test_install_reports_a_location_it_cannot_write_instead_of_raising(env):
    blocked = env.home / ".config" / "google-chrome" / "NativeMessagingHosts"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where a folder should be")
    report = install.install(browsers=["chrome", "firefox"], root=env.root)
    assert not report.ok
    error = the(report.errors, "write_failed")
    assert error.browser == "chrome" and error.fix
    assert [r.browsers for r in report.registrations] == [["firefox"]]


def test_extension_ids_are_added_with_trailing_slash_and_gecko_ids_go_to_firefox(env):
    install.install(browsers=["chrome", "firefox"], root=env.root,
                    extension_ids=[OTHER_ID, "helper@example.org"])
    chrome = read_manifest(env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json")
    firefox = read_manifest(env.home / LINUX_USER_DIRS["firefox"] / "hybrid_engine.json")
    assert chrome["allowed_origins"] == [PINNED_ORIGIN, f"chrome-extension://{OTHER_ID}/"]
    assert firefox["allowed_extensions"] == [identity.FIREFOX_EXTENSION_ID, "helper@example.org"]


def test_extension_id_given_as_origin_without_slash_is_normalised(env):
    install.install(browsers=["chrome"], root=env.root, extension_ids=[f"chrome-extension://{OTHER_ID}"])
    chrome = read_manifest(env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json")
    assert chrome["allowed_origins"][-1] == f"chrome-extension://{OTHER_ID}/"


def test_invalid_extension_id_is_bad_request(env):
    with pytest.raises(BadRequest):
        install.install(browsers=["chrome"], root=env.root, extension_ids=["not-an-id"])


def test_unknown_browser_is_bad_request(env):
    with pytest.raises(BadRequest):
        install.install(browsers=["netscape"], root=env.root)


def test_browser_aliases_are_accepted():
    assert install.browser_key("Google-Chrome") == "chrome"
    assert install.browser_key("firefox-esr") == "firefox"
    assert install.browser_key("msedge") == "edge"


def test_reinstall_keeps_extension_ids_given_before(env):
    install.install(browsers=["chrome"], root=env.root, extension_ids=[OTHER_ID])
    install.install(browsers=["chrome"], root=env.root)
    chrome = read_manifest(env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json")
    assert f"chrome-extension://{OTHER_ID}/" in chrome["allowed_origins"]
    assert install.registered_extension_ids() == {identity.CHROME_EXTENSION_ID, OTHER_ID}


def test_dry_run_plans_but_writes_nothing(env):
    report = install.install(browsers=["chrome", "firefox"], root=env.root, dry_run=True)
    assert len(report.registrations) == 2 and report.dry_run
    assert not env.data.exists()
    assert not (env.home / ".config").exists()


def test_system_install_writes_the_system_folders(env):
    report = install.install(browsers=["chrome", "chromium", "edge", "vivaldi", "firefox", "librewolf"],
                             system=True, root=env.root)
    assert report.ok
    for rel in ("etc/opt/chrome/native-messaging-hosts", "etc/chromium/native-messaging-hosts",
                "etc/opt/edge/native-messaging-hosts", "etc/vivaldi/native-messaging-hosts",
                "usr/lib/mozilla/native-messaging-hosts", "usr/lib/librewolf/native-messaging-hosts"):
        assert read_manifest(env.root / rel / "hybrid_engine.json")["name"] == "hybrid_engine"
    assert not (env.root / "usr" / "lib64").exists()
    assert not (env.home / ".config").exists()


def test_system_install_writes_lib64_for_firefox_where_the_system_has_lib64(env):
    (env.root / "usr" / "lib64").mkdir(parents=True)
    install.install(browsers=["firefox"], system=True, root=env.root)
    assert (env.root / "usr/lib64/mozilla/native-messaging-hosts/hybrid_engine.json").exists()


def test_brave_shares_chromes_system_folder_and_it_is_written_once(env):
    report = install.install(browsers=["chrome", "brave"], system=True, root=env.root)
    assert [sorted(r.browsers) for r in report.registrations] == [["brave", "chrome"]]


def test_flatpak_browser_gets_manifest_and_wrapper_inside_its_sandbox(env):
    app = env.home / ".var" / "app" / "org.chromium.Chromium"
    app.mkdir(parents=True)
    report = install.install(root=env.root)
    manifest_path = app / "config/chromium/NativeMessagingHosts/hybrid_engine.json"
    manifest = read_manifest(manifest_path)
    wrapper = Path(manifest["path"])
    assert wrapper.is_relative_to(app)
    text = wrapper.read_text()
    assert f"exec /usr/bin/flatpak-spawn --host {shlex.quote(str(env.data / 'bin' / 'hybrid-engine-host'))}" in text
    assert os.access(wrapper, os.X_OK)
    assert any("flatpak override --user --talk-name=org.freedesktop.Flatpak org.chromium.Chromium" in n
               for n in report.notes)


def test_flatpak_firefox_manifest_goes_to_the_sandboxed_mozilla_folder(env):
    app = env.home / ".var" / "app" / "org.mozilla.firefox"
    app.mkdir(parents=True)
    install.install(root=env.root)
    manifest = read_manifest(app / ".mozilla/native-messaging-hosts/hybrid_engine.json")
    assert manifest["allowed_extensions"] == [identity.FIREFOX_EXTENSION_ID]


def test_snap_chromium_is_skipped_with_the_reason(env):
    (env.root / "snap" / "bin").mkdir(parents=True)
    (env.root / "snap" / "bin" / "chromium").write_text("")
    report = install.install(root=env.root)
    assert report.registrations == []
    reason = next(s["reason"] for s in report.skipped if s["browser"] == "chromium")
    assert "Snap" in reason


# ---- uninstall ---------------------------------------------------------------

def test_uninstall_removes_exactly_what_install_wrote(env):
    install.install(browsers=["chrome", "firefox"], root=env.root)
    folder = env.home / LINUX_USER_DIRS["chrome"]
    neighbour = folder / "org.other.host.json"
    neighbour.write_text("{}")
    mine_elsewhere = env.home / LINUX_USER_DIRS["chromium"] / "hybrid_engine.json"
    mine_elsewhere.parent.mkdir(parents=True)
    mine_elsewhere.write_text(json.dumps({"name": "hybrid_engine"}))  # not written by install
    install.uninstall()
    assert not (folder / "hybrid_engine.json").exists()
    assert not (env.home / LINUX_USER_DIRS["firefox"] / "hybrid_engine.json").exists()
    assert neighbour.exists() and mine_elsewhere.exists() and folder.is_dir()


def test_uninstall_of_one_browser_keeps_the_others(env):
    install.install(browsers=["chrome", "firefox"], root=env.root)
    report = install.uninstall(browsers=["firefox"])
    assert [r.browsers for r in report.removed] == [["firefox"]]
    assert (env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json").exists()
    assert (env.data / "bin" / "hybrid-engine-host").exists()
    assert [r.browsers for r in install.recorded_registrations()] == [["chrome"]]


def test_uninstall_of_one_browser_keeps_a_folder_another_browser_reads(env):
    install.install(browsers=["chrome", "brave"], system=True, root=env.root)
    report = install.uninstall(browsers=["brave"])
    assert (env.root / "etc/opt/chrome/native-messaging-hosts/hybrid_engine.json").exists()
    assert report.kept and [r.browsers for r in install.recorded_registrations()] == [["chrome"]]


def test_uninstall_leaves_a_manifest_that_is_no_longer_ours(env):
    install.install(browsers=["chrome"], root=env.root)
    path = env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json"
    path.write_text(json.dumps({"name": "someone_else"}))
    report = install.uninstall()
    assert path.exists() and any("not a hybrid_engine manifest" in n for n in report.notes)


def test_uninstall_removes_flatpak_wrapper(env):
    app = env.home / ".var" / "app" / "com.brave.Browser"
    app.mkdir(parents=True)
    install.install(root=env.root)
    wrapper = install.flatpak_wrapper_path("brave", env.home)
    assert wrapper.exists()
    install.uninstall()
    assert not wrapper.exists()


def test_uninstall_with_nothing_installed_is_a_no_op(env):
    report = install.uninstall()
    assert report.ok and report.removed == []


# ---- path tables ---------------------------------------------------------------

HOME = Path("/home/u")
MAC_HOME = Path("/Users/u")


@pytest.mark.parametrize("browser,expected", [
    ("chrome", ["/home/u/.config/google-chrome/NativeMessagingHosts"]),
    ("chromium", ["/home/u/.config/chromium/NativeMessagingHosts"]),
    ("edge", ["/home/u/.config/microsoft-edge/NativeMessagingHosts"]),
    ("brave", ["/home/u/.config/BraveSoftware/Brave-Browser/NativeMessagingHosts"]),
    ("vivaldi", ["/home/u/.config/vivaldi/NativeMessagingHosts"]),
    ("firefox", ["/home/u/.mozilla/native-messaging-hosts"]),
    ("librewolf", ["/home/u/.librewolf/native-messaging-hosts"]),
])
def test_linux_user_manifest_folders(browser, expected):
    assert install.manifest_dirs(browser, LINUX, USER, home=HOME) == [Path(p) for p in expected]


def test_linux_user_folders_follow_xdg_config_home_except_mozilla():
    assert install.manifest_dirs("chrome", LINUX, home=HOME, config_home="/xdg") == [
        Path("/xdg/google-chrome/NativeMessagingHosts")]
    assert install.manifest_dirs("firefox", LINUX, home=HOME, config_home="/xdg") == [
        Path("/home/u/.mozilla/native-messaging-hosts")]


@pytest.mark.parametrize("browser,expected", [
    ("chrome", ["/etc/opt/chrome/native-messaging-hosts"]),
    ("chromium", ["/etc/chromium/native-messaging-hosts"]),
    ("edge", ["/etc/opt/edge/native-messaging-hosts"]),
    ("brave", ["/etc/opt/chrome/native-messaging-hosts"]),
    ("vivaldi", ["/etc/vivaldi/native-messaging-hosts"]),
    ("firefox", ["/usr/lib/mozilla/native-messaging-hosts", "/usr/lib64/mozilla/native-messaging-hosts"]),
    ("librewolf", ["/usr/lib/librewolf/native-messaging-hosts"]),
])
def test_linux_system_manifest_folders(browser, expected):
    assert install.manifest_dirs(browser, LINUX, SYSTEM, home=HOME) == [Path(p) for p in expected]


@pytest.mark.parametrize("browser,app_id,rel", [
    ("chrome", "com.google.Chrome", "config/google-chrome/NativeMessagingHosts"),
    ("chromium", "org.chromium.Chromium", "config/chromium/NativeMessagingHosts"),
    ("edge", "com.microsoft.Edge", "config/microsoft-edge/NativeMessagingHosts"),
    ("brave", "com.brave.Browser", "config/BraveSoftware/Brave-Browser/NativeMessagingHosts"),
    ("vivaldi", "com.vivaldi.Vivaldi", "config/vivaldi/NativeMessagingHosts"),
    ("firefox", "org.mozilla.firefox", ".mozilla/native-messaging-hosts"),
    ("librewolf", "io.gitlab.librewolf-community", ".librewolf/native-messaging-hosts"),
])
def test_flatpak_manifest_folders(browser, app_id, rel):
    assert install.flatpak_manifest_dir(browser, HOME) == HOME / ".var/app" / app_id / rel


AS = "/Users/u/Library/Application Support"


@pytest.mark.parametrize("browser,expected", [
    ("chrome", [f"{AS}/Google/Chrome/NativeMessagingHosts"]),
    ("chromium", [f"{AS}/Chromium/NativeMessagingHosts"]),
    ("edge", [f"{AS}/Microsoft Edge/NativeMessagingHosts"]),
    ("brave", [f"{AS}/BraveSoftware/Brave-Browser/NativeMessagingHosts", f"{AS}/Google/Chrome/NativeMessagingHosts"]),
    ("vivaldi", [f"{AS}/Vivaldi/NativeMessagingHosts"]),
    ("firefox", [f"{AS}/Mozilla/NativeMessagingHosts"]),
    ("librewolf", [f"{AS}/LibreWolf/NativeMessagingHosts"]),
])
def test_macos_user_manifest_folders(browser, expected):
    assert install.manifest_dirs(browser, MACOS, USER, home=MAC_HOME) == [Path(p) for p in expected]


@pytest.mark.parametrize("browser,expected", [
    ("chrome", "/Library/Google/Chrome/NativeMessagingHosts"),
    ("chromium", "/Library/Application Support/Chromium/NativeMessagingHosts"),
    ("edge", "/Library/Microsoft/Edge/NativeMessagingHosts"),
    ("brave", "/Library/Google/Chrome/NativeMessagingHosts"),
    ("vivaldi", "/Library/Application Support/Vivaldi/NativeMessagingHosts"),
    ("firefox", "/Library/Application Support/Mozilla/NativeMessagingHosts"),
    ("librewolf", "/Library/Application Support/LibreWolf/NativeMessagingHosts"),
])
def test_macos_system_manifest_folders(browser, expected):
    assert install.manifest_dirs(browser, MACOS, SYSTEM, home=MAC_HOME) == [Path(expected)]


def test_macos_install_writes_library_application_support(env):
    report = install.install(browsers=["chrome", "firefox"], os_name=MACOS, root=env.root)
    assert report.ok
    base = env.home / "Library" / "Application Support"
    assert read_manifest(base / "Google/Chrome/NativeMessagingHosts/hybrid_engine.json")["allowed_origins"] == [
        PINNED_ORIGIN]
    assert read_manifest(base / "Mozilla/NativeMessagingHosts/hybrid_engine.json")["name"] == "hybrid_engine"


@pytest.mark.parametrize("browser,expected", [
    ("chrome", [r"Software\Google\Chrome\NativeMessagingHosts\hybrid_engine"]),
    ("chromium", [r"Software\Chromium\NativeMessagingHosts\hybrid_engine",
                  r"Software\Google\Chrome\NativeMessagingHosts\hybrid_engine"]),
    ("edge", [r"Software\Microsoft\Edge\NativeMessagingHosts\hybrid_engine"]),
    ("brave", [r"Software\BraveSoftware\Brave-Browser\NativeMessagingHosts\hybrid_engine",
               r"Software\Google\Chrome\NativeMessagingHosts\hybrid_engine"]),
    ("vivaldi", [r"Software\Vivaldi\NativeMessagingHosts\hybrid_engine",
                 r"Software\Google\Chrome\NativeMessagingHosts\hybrid_engine"]),
    ("firefox", [r"Software\Mozilla\NativeMessagingHosts\hybrid_engine"]),
    ("librewolf", [r"Software\Mozilla\NativeMessagingHosts\hybrid_engine"]),
])
def test_windows_registry_keys_under_hkcu(browser, expected):
    assert install.registry_keys(browser, USER) == [("HKCU", k) for k in expected]


def test_windows_system_keys_are_under_hklm():
    assert install.registry_keys("chrome", SYSTEM) == [
        ("HKLM", r"Software\Google\Chrome\NativeMessagingHosts\hybrid_engine")]


def test_windows_has_no_manifest_folders_and_keeps_manifests_under_the_data_folder():
    assert install.manifest_dirs("chrome", WINDOWS, home=HOME) == []
    assert install.windows_manifest_path(CHROMIUM, Path("/d")) == Path("/d/native-messaging/chromium/hybrid_engine.json")
    assert install.windows_manifest_path(FIREFOX, Path("/d")) == Path("/d/native-messaging/firefox/hybrid_engine.json")


def test_windows_launcher_is_a_bat_running_the_absolute_interpreter():
    assert install.launcher_path(Path("/d"), WINDOWS).name == "hybrid-engine-host.bat"
    text = install.launcher_script(r"C:\Py\python.exe", WINDOWS, r"C:\he")
    assert text == ("@echo off\r\nrem Hybrid Engine native-messaging host, written by `hybrid-engine install`.\r\n"
                    'set "HYBRID_ENGINE_HOME=C:\\he"\r\n"C:\\Py\\python.exe" -m hybrid_engine host %*\r\n')


def test_windows_install_sets_hkcu_default_values_to_the_manifest_path(env):
    registry = MemoryRegistry()
    report = install.install(browsers=["chrome", "brave", "firefox"], os_name=WINDOWS, registry=registry,
                             root=env.root)
    assert report.ok
    chromium_manifest = str(env.data / "native-messaging" / "chromium" / "hybrid_engine.json")
    firefox_manifest = str(env.data / "native-messaging" / "firefox" / "hybrid_engine.json")
    assert registry.get_default("HKCU", r"Software\Google\Chrome\NativeMessagingHosts\hybrid_engine") == chromium_manifest
    assert registry.get_default("HKCU", r"Software\BraveSoftware\Brave-Browser\NativeMessagingHosts\hybrid_engine") \
        == chromium_manifest
    assert registry.get_default("HKCU", r"Software\Mozilla\NativeMessagingHosts\hybrid_engine") == firefox_manifest
    assert read_manifest(Path(chromium_manifest))["path"] == str(env.data / "bin" / "hybrid-engine-host.bat")
    assert (env.data / "bin" / "hybrid-engine-host.bat").read_bytes().count(b"\r\r") == 0


def test_windows_uninstall_deletes_the_keys_and_manifests(env):
    registry = MemoryRegistry()
    install.install(browsers=["chrome", "firefox"], os_name=WINDOWS, registry=registry, root=env.root)
    install.uninstall(os_name=WINDOWS, registry=registry)
    assert registry.values == {}
    assert not (env.data / "native-messaging").exists()


# ---- doctor --------------------------------------------------------------------

def installed(env, browsers=("chrome", "firefox"), **kw):
    report = install.install(browsers=list(browsers), root=env.root, **kw)
    assert report.ok, report.errors
    return report


def diagnose(env, **kw):
    kw.setdefault("check_launch", False)
    return install.doctor(root=env.root, **kw)


def test_doctor_finds_nothing_wrong_after_install(env):
    installed(env)
    assert diagnose(env) == []


def test_doctor_says_not_installed_and_how_to_install(env):
    finding = the(diagnose(env), "not_installed")
    assert finding.severity == "error" and "hybrid-engine install" in finding.fix


def test_doctor_finds_a_missing_launcher(env):
    installed(env)
    (env.data / "bin" / "hybrid-engine-host").unlink()
    finding = the(diagnose(env), "launcher_missing")
    assert finding.path == str(env.data / "bin" / "hybrid-engine-host")
    assert "hybrid-engine install --browser" in finding.fix


def test_doctor_finds_a_launcher_that_is_not_executable(env):
    installed(env)
    launcher = env.data / "bin" / "hybrid-engine-host"
    launcher.chmod(0o644)
    finding = the(diagnose(env), "launcher_not_executable")
    assert finding.fix == f"chmod 755 {launcher}"


def test_doctor_finds_an_origin_without_trailing_slash(env):
    installed(env, ["chrome"])
    path = env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json"
    manifest = read_manifest(path)
    manifest["allowed_origins"] = [PINNED_ORIGIN.rstrip("/")]
    path.write_text(json.dumps(manifest))
    findings = diagnose(env)
    finding = the(findings, "origin_no_trailing_slash")
    assert f'to "{PINNED_ORIGIN}"' in finding.fix
    assert "pinned_id_missing" not in codes(findings)


def test_doctor_finds_a_wrong_extension_id(env):
    installed(env, ["chrome"])
    path = env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json"
    manifest = read_manifest(path)
    manifest["allowed_origins"] = [f"chrome-extension://{OTHER_ID}/"]
    path.write_text(json.dumps(manifest))
    finding = the(diagnose(env), "pinned_id_missing")
    assert PINNED_ORIGIN in finding.fix and "hybrid-engine install --browser chrome" in finding.fix


def test_doctor_finds_a_firefox_manifest_without_the_gecko_id(env):
    installed(env, ["firefox"])
    path = env.home / LINUX_USER_DIRS["firefox"] / "hybrid_engine.json"
    manifest = read_manifest(path)
    manifest["allowed_extensions"] = ["someone@else.org"]
    path.write_text(json.dumps(manifest))
    finding = the(diagnose(env), "gecko_id_missing")
    assert identity.FIREFOX_EXTENSION_ID in finding.fix


def test_doctor_finds_a_utf8_bom(env):
    installed(env, ["chrome"])
    path = env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    findings = diagnose(env)
    finding = the(findings, "manifest_bom")
    assert "hybrid-engine install --browser chrome" in finding.fix
    assert codes(findings) == ["manifest_bom"]  # the rest of the manifest is still checked, and fine


def test_doctor_finds_a_manifest_that_is_not_json(env):
    installed(env, ["chrome"])
    (env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json").write_text("{'name': 'hybrid_engine'}")
    assert the(diagnose(env), "manifest_invalid_json").fix


def test_doctor_finds_a_name_that_does_not_match(env):
    installed(env, ["chrome"])
    path = env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json"
    manifest = read_manifest(path)
    manifest["name"] = "com.example.other"
    path.write_text(json.dumps(manifest))
    assert '"name": "hybrid_engine"' in the(diagnose(env), "name_mismatch").fix


def test_doctor_finds_a_stale_duplicate_in_the_system_folder(env):
    installed(env, ["chrome"])
    system = env.root / "etc/opt/chrome/native-messaging-hosts/hybrid_engine.json"
    system.parent.mkdir(parents=True)
    stale = install.build_manifest(CHROMIUM, "/opt/old-hybrid-engine/host")
    system.write_text(json.dumps(stale))
    findings = diagnose(env)
    finding = the(findings, "duplicate_manifest")
    assert finding.path == str(system)
    assert finding.fix == f"sudo rm {system}"
    assert "stale_manifest" not in codes(findings)


def test_doctor_finds_a_stale_manifest_it_did_not_write(env):
    installed(env, ["chrome"])
    other = env.home / LINUX_USER_DIRS["edge"] / "hybrid_engine.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps(install.build_manifest(CHROMIUM, str(env.data / "old" / "host"))))
    finding = the(diagnose(env), "stale_manifest")
    assert finding.path == str(other) and f"rm {other}" in finding.fix


def test_doctor_finds_a_registration_that_was_deleted(env):
    installed(env, ["chrome", "firefox"])
    (env.home / LINUX_USER_DIRS["firefox"] / "hybrid_engine.json").unlink()
    finding = the(diagnose(env), "registration_missing")
    assert finding.fix == "run: hybrid-engine install --browser firefox"


def test_doctor_finds_a_launcher_whose_interpreter_is_gone(env):
    installed(env, ["chrome"], python=str(env.tmp / "deleted-venv" / "bin" / "python"))
    assert "reinstall the package" in the(diagnose(env), "launcher_python_missing").fix


def test_doctor_recognises_snap_chromium(env):
    installed(env, ["firefox"])
    (env.home / "snap" / "chromium").mkdir(parents=True)
    finding = the(diagnose(env), "snap_browser")
    assert finding.browser == "chromium" and "Snap" in finding.problem and finding.fix


def test_doctor_explains_a_flatpak_browser_that_is_not_registered(env):
    installed(env, ["firefox"])
    (env.home / ".var" / "app" / "com.google.Chrome").mkdir(parents=True)
    finding = the(diagnose(env), "flatpak_not_registered")
    assert finding.fix.startswith("run: hybrid-engine install --browser chrome")


def test_doctor_asks_for_flatpak_host_access_until_it_is_granted(env):
    (env.home / ".var" / "app" / "org.mozilla.firefox").mkdir(parents=True)
    install.install(root=env.root)
    finding = the(diagnose(env), "flatpak_no_host_access")
    assert finding.fix == "flatpak override --user --talk-name=org.freedesktop.Flatpak org.mozilla.firefox"
    overrides = env.home / ".local/share/flatpak/overrides"
    overrides.mkdir(parents=True)
    (overrides / "org.mozilla.firefox").write_text("[Session Bus Policy]\norg.freedesktop.Flatpak=talk\n")
    assert "flatpak_no_host_access" not in codes(diagnose(env))


def test_every_doctor_finding_names_a_fix(env):
    installed(env, ["chrome", "firefox"])
    chrome = env.home / LINUX_USER_DIRS["chrome"] / "hybrid_engine.json"
    chrome.write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "x", "type": "pipe", "path": "rel/host",
                                                     "allowed_origins": ["*"]}).encode())
    (env.home / "snap" / "chromium").mkdir(parents=True)
    findings = diagnose(env)
    assert len(findings) >= 5
    assert all(f.fix and f.problem and f.severity in ("error", "warning", "info") for f in findings)


def test_doctor_checks_windows_registry_values(env):
    registry = MemoryRegistry()
    install.install(browsers=["chrome"], os_name=WINDOWS, registry=registry, root=env.root)
    assert install.doctor(os_name=WINDOWS, registry=registry, root=env.root, check_launch=False) == []
    (env.data / "native-messaging" / "chromium" / "hybrid_engine.json").unlink()
    findings = install.doctor(os_name=WINDOWS, registry=registry, root=env.root, check_launch=False)
    finding = the(findings, "manifest_missing")
    assert finding.path == str(env.data / "native-messaging" / "chromium" / "hybrid_engine.json")


# ---- launching the host ----------------------------------------------------------

def test_check_host_gets_a_hello_reply_from_a_launcher(env):
    launcher = write_fake_host(env.tmp)
    result = install.check_host(launcher, [PINNED_ORIGIN], timeout=60)  # room on a busy machine
    assert result.ok, result.problem
    assert result.reply["result"]["argv"] == [PINNED_ORIGIN]


def test_check_host_reports_a_host_that_does_not_answer_in_time(env):
    launcher = write_fake_host(env.tmp, "silent")  # it sleeps 30 s: only the timeout ends the check
    result = install.check_host(launcher, timeout=0.5)
    assert not result.ok and "no answer to hello within 0.5 s" in result.problem
    assert result.elapsed_s >= 0.5


def test_check_host_reports_a_host_that_exits_with_its_error(env):
    result = install.check_host(write_fake_host(env.tmp, "exit"), timeout=60)
    assert not result.ok and "boom: no module named" in result.problem


def test_doctor_launches_each_registered_host_and_accepts_a_hello_reply(env):
    installed(env, ["chrome", "firefox"])
    launcher = env.data / "bin" / "hybrid-engine-host"
    launcher.write_text(write_fake_host(env.tmp).read_text())
    assert install.doctor(root=env.root, timeout=60) == []  # room on a busy machine


def test_doctor_reports_a_host_that_does_not_answer_hello(env):
    installed(env, ["chrome"])
    launcher = env.data / "bin" / "hybrid-engine-host"
    launcher.write_text(write_fake_host(env.tmp, "silent").read_text())
    finding = the(install.doctor(root=env.root, timeout=0.5), "host_no_answer")
    assert finding.path == str(launcher) and str(launcher) in finding.fix


# ---- the extension's identity ----------------------------------------------------

def test_chrome_id_is_derived_from_the_pinned_key():
    assert identity.extension_id_from_key(identity.EXTENSION_KEY) == "nlkheheibdjgljjkppadijobigcmmhij"
    assert identity.CHROME_EXTENSION_ID == "nlkheheibdjgljjkppadijobigcmmhij"


def test_hex_digits_map_to_letters_a_to_p():
    assert identity.id_from_hex("0123456789abcdef") == "abcdefghijklmnop"


def test_an_invalid_key_is_rejected():
    with pytest.raises(ValueError):
        identity.extension_id_from_key("not base64!")


def test_extension_manifest_pins_the_key_and_the_gecko_id():
    manifest = json.loads((REPO / "extension" / "manifest.json").read_text())
    assert manifest["manifest_version"] == 3
    assert manifest["key"] == identity.EXTENSION_KEY
    assert manifest["browser_specific_settings"]["gecko"]["id"] == identity.FIREFOX_EXTENSION_ID
    assert manifest["action"]["default_title"] == "Send page to workflow"
    assert "nativeMessaging" in manifest["permissions"]


def test_no_private_key_is_kept_with_the_extension():
    places = [REPO / "host" / "hybrid_engine" / "identity.py", *(REPO / "extension").rglob("*")]
    for path in places:
        if not path.is_file():
            continue
        assert path.suffix not in {".pem", ".key", ".der", ".p8", ".crx"}, path
        assert b"PRIVATE KEY" not in path.read_bytes(), path


# ---- browsers started with their own --user-data-dir ----------------------------

def fake_process(proc: Path, pid: int, *argv: str, cwd: Path | None = None) -> None:
    """A /proc/<pid> entry as doctor reads it: NUL-separated cmdline, and cwd as a symlink."""
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    if cwd is not None:
        (entry / "cwd").symlink_to(cwd)


def test_install_with_user_data_dir_writes_into_that_profiles_native_messaging_hosts(env):
    profile = env.tmp / "profiles" / "work"
    report = install.install(browsers=["chromium"], root=env.root, user_data_dirs=[str(profile)])
    assert report.ok, report.errors
    manifest = profile / "NativeMessagingHosts" / "hybrid_engine.json"
    data = read_manifest(manifest)
    assert data["allowed_origins"] == [PINNED_ORIGIN] and data["path"] == report.launcher
    assert not (env.home / LINUX_USER_DIRS["chromium"]).exists()  # the profile folder instead of the usual one
    [recorded] = install.recorded_registrations()
    assert recorded.user_data_dir == str(profile) and recorded.manifest == str(manifest)


def test_user_data_dir_with_firefox_says_firefox_has_no_such_folder_and_registers_it_as_usual(env):
    profile = env.tmp / "ff-profile"
    report = install.install(browsers=["firefox"], root=env.root, user_data_dirs=[str(profile)])
    assert report.ok, report.errors
    assert any("Firefox has no per-profile folder" in n for n in report.notes), report.notes
    assert read_manifest(env.home / LINUX_USER_DIRS["firefox"] / "hybrid_engine.json")["allowed_extensions"]
    assert not (profile / "NativeMessagingHosts").exists()


def test_user_data_dir_that_is_a_file_is_bad_request(env):
    not_a_folder = env.tmp / "file"
    not_a_folder.write_text("x")
    with pytest.raises(BadRequest, match="is not a folder"):
        install.install(browsers=["chrome"], root=env.root, user_data_dirs=[str(not_a_folder)])


def test_uninstall_removes_the_profile_registration_and_leaves_the_profile(env):
    profile = env.tmp / "profile"
    install.install(browsers=["chrome"], root=env.root, user_data_dirs=[str(profile)])
    report = install.uninstall()
    assert [r.user_data_dir for r in report.removed] == [str(profile)]
    assert not (profile / "NativeMessagingHosts").exists() and profile.is_dir()
    assert not install.record_path().exists()


def test_doctor_checks_a_profile_registration_and_its_fix_names_the_folder(env):
    profile = env.tmp / "profile"
    install.install(browsers=["chromium"], root=env.root, user_data_dirs=[str(profile)])
    assert diagnose(env) == []
    manifest = profile / "NativeMessagingHosts" / "hybrid_engine.json"
    data = read_manifest(manifest)
    data["allowed_origins"] = [f"chrome-extension://{OTHER_ID}/"]
    manifest.write_text(json.dumps(data))
    finding = the(diagnose(env), "pinned_id_missing")
    assert finding.path == str(manifest) and f"--user-data-dir {profile}" in finding.fix
    manifest.unlink()
    assert the(diagnose(env), "registration_missing").fix == (
        f"run: hybrid-engine install --browser chromium --user-data-dir {profile}")


def test_doctor_finds_a_running_browser_whose_profile_folder_has_no_registration(env):
    installed(env)  # the usual folders are registered; the running browsers use other ones
    proc = env.tmp / "proc"
    fake_process(proc, 4242, "/usr/lib/chromium/chromium", "--user-data-dir=/srv/profiles/a", "--no-first-run")
    fake_process(proc, 4243, "/usr/lib/chromium/chromium", "--type=renderer", "--user-data-dir=/srv/profiles/b")
    fake_process(proc, 4250, "/opt/google/chrome/chrome", "--user-data-dir=rel/p", cwd=env.tmp)
    fake_process(proc, 4260, "/usr/bin/python3", "--user-data-dir=/srv/not-a-browser")
    findings = [f for f in diagnose(env, proc_root=proc) if f.code == "profile_not_registered"]
    assert [(f.browser, f.path) for f in findings] == [
        ("chromium", "/srv/profiles/a/NativeMessagingHosts/hybrid_engine.json"),
        ("chrome", f"{env.tmp}/rel/p/NativeMessagingHosts/hybrid_engine.json")]
    assert findings[0].severity == install.WARNING and "pid 4242" in findings[0].problem
    assert findings[0].fix == "run: hybrid-engine install --browser chromium --user-data-dir /srv/profiles/a"


def test_doctor_is_content_once_the_running_browsers_profile_is_registered(env):
    profile = env.tmp / "profile"
    proc = env.tmp / "proc"
    fake_process(proc, 7, "/usr/bin/chromium", f"--user-data-dir={profile}")
    assert the(diagnose(env, proc_root=proc), "profile_not_registered")
    install.install(browsers=["chromium"], root=env.root, user_data_dirs=[str(profile)])
    assert diagnose(env, proc_root=proc) == []


def test_cli_install_user_data_dir_registers_there(env, capsys):
    from hybrid_engine.cli import main

    profile = env.tmp / "cli-profile"
    assert main(["install", "--browser", "chromium", "--user-data-dir", str(profile)]) == 0
    out = capsys.readouterr().out
    manifest = profile / "NativeMessagingHosts" / "hybrid_engine.json"
    assert f"registered chromium: {manifest}" in out
    assert read_manifest(manifest)["name"] == "hybrid_engine"


def test_running_profiles_reads_the_real_proc_of_a_running_browser_process(env):
    profile = env.tmp / "live-profile"
    # A process whose argv is a Chromium browser's (the program itself says it runs, then waits for
    # stdin to close). Its line is awaited: before the exec, /proc shows the parent's argv.
    proc = subprocess.Popen(["/usr/lib/chromium/chromium", "-c", "import sys; print('up', flush=True); sys.stdin.read()",
                             f"--user-data-dir={profile}"], executable=sys.executable, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"
        found = [p for p in install.running_profiles() if p.pid == proc.pid]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert found == [install.RunningProfile("chromium", str(profile), proc.pid)]
