"""Registering the native host with browsers, removing it, and diagnosing it.

The browser finds a native host through a manifest named ``hybrid_engine.json``:
a file in a per-browser folder on Linux and macOS, a file anywhere plus a registry
key whose default value is its path on Windows. The manifest's ``path`` is a launcher
written at install time (``<data>/bin/hybrid-engine-host``) that runs the absolute
interpreter that has this package; the browser starts it with a minimal environment,
so nothing in it depends on PATH.

Pure parts (path tables, manifest contents, plans) take the OS as a parameter so
every layout is testable anywhere; the thin filesystem/registry parts are
``install``, ``uninstall`` and ``doctor``. What install wrote is remembered in
``<data>/installed.json`` and uninstall removes exactly that.

Path tables, and where they come from:
- Chrome and Chromium, Linux/macOS user and system folders, Windows keys:
  developer.chrome.com "Native messaging", section "Native messaging host location".
- Firefox: MDN "Native manifests", section "Manifest location" (Linux ~/.mozilla and
  /usr/lib{,64}/mozilla; macOS ~/Library/Application Support/Mozilla and /Library/...;
  Windows HKCU/HKLM Software\\Mozilla\\NativeMessagingHosts).
- Edge: learn.microsoft.com "Native messaging" (Linux ~/.config/microsoft-edge and
  /etc/opt/edge; macOS ~/Library/Application Support/Microsoft Edge and
  /Library/Microsoft/Edge; Windows Software\\Microsoft\\Edge).
- Brave: brave-core's main delegate overrides the system folder to Chrome's on Linux
  and macOS, and the user folder to Chrome's on macOS; the Brave folders themselves are
  where installers such as KeePassXC and VdhCoApp write. Both are written.
- Vivaldi: ~/.config/vivaldi (KeePassXC, browserpass); /etc/vivaldi (distribution packages
  of passff and tridactyl). On Windows Vivaldi, Brave and non-Chromium-branded builds
  read Chrome's key, so Chrome's key is written for them too.
- LibreWolf: ~/.librewolf and /usr/lib/librewolf (LibreWolf FAQ, PWAsForFirefox, passff);
  on Windows it reads Mozilla's key.
- Flatpak: each app sees only ~/.var/app/<app-id>/; the manifest goes to
  ~/.var/app/<id>/config/<browser folder>/NativeMessagingHosts (Firefox family:
  ~/.var/app/<id>/.mozilla/native-messaging-hosts), pointing to a wrapper inside the
  sandbox that runs the real launcher with ``flatpak-spawn --host``.
- A Chromium-family browser started with ``--user-data-dir=DIR`` reads native hosts from
  ``DIR/NativeMessagingHosts`` instead of its usual folder (Chromium's DIR_USER_NATIVE_MESSAGING
  is derived from the user data directory on Linux and macOS); ``install --user-data-dir DIR``
  writes there. Firefox has no such folder: every profile reads the one folder above, and
  Windows browsers read the registry whatever their profile.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Protocol, Sequence

from . import config
from .errors import BadRequest
from .identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID, chrome_origin, is_chrome_extension_id

HOST_NAME = "hybrid_engine"
MANIFEST_NAME = f"{HOST_NAME}.json"
DESCRIPTION = "Hybrid Engine native-messaging host (local AI workflows)"
LAUNCHER_NAME = "hybrid-engine-host"
RECORD_NAME = "installed.json"
HELLO = {"id": 1, "type": "hello", "protocol": 1}
HELLO_TIMEOUT_S = 2.0

LINUX, MACOS, WINDOWS = "linux", "darwin", "windows"
OSES = (LINUX, MACOS, WINDOWS)
USER, SYSTEM = "user", "system"
CHROMIUM, FIREFOX = "chromium", "firefox"
ERROR, WARNING, INFO = "error", "warning", "info"

_UTF8_BOM = b"\xef\xbb\xbf"
_FLATPAK_SPAWN = "/usr/bin/flatpak-spawn"
_FLATPAK_WRAPPER_DIR = "data/hybrid-engine"
_ORIGIN = re.compile(r"^chrome-extension://([a-p]{32})/$")
_ORIGIN_NO_SLASH = re.compile(r"^chrome-extension://([a-p]{32})$")
_GECKO_ID = re.compile(r"^(\{[0-9a-fA-F-]{36}\}|[A-Za-z0-9._+-]*@[A-Za-z0-9._-]+)$")
_LAUNCHER_PYTHON = re.compile(r"""^(?:exec\s+)?(?:'([^']+)'|"([^"]+)"|([^\s'"]+))\s+-m\s+hybrid_engine\b""", re.M)


# ---- browsers and path tables ----------------------------------------------

@dataclass(frozen=True)
class Browser:
    key: str
    label: str
    family: str  # CHROMIUM or FIREFOX: which manifest shape it reads
    binaries: tuple[str, ...]  # Linux program names looked up on PATH
    snap: str | None  # snap name, where a snap exists
    flatpak_id: str | None
    flatpak_dir: str | None  # manifest folder relative to ~/.var/app/<id>/
    macos_app: str


BROWSERS: dict[str, Browser] = {
    b.key: b
    for b in (
        Browser("chrome", "Google Chrome", CHROMIUM, ("google-chrome", "google-chrome-stable"), None,
                "com.google.Chrome", "config/google-chrome/NativeMessagingHosts", "Google Chrome.app"),
        Browser("chromium", "Chromium", CHROMIUM, ("chromium", "chromium-browser"), "chromium",
                "org.chromium.Chromium", "config/chromium/NativeMessagingHosts", "Chromium.app"),
        Browser("edge", "Microsoft Edge", CHROMIUM, ("microsoft-edge", "microsoft-edge-stable"), None,
                "com.microsoft.Edge", "config/microsoft-edge/NativeMessagingHosts", "Microsoft Edge.app"),
        Browser("brave", "Brave", CHROMIUM, ("brave-browser", "brave"), "brave",
                "com.brave.Browser", "config/BraveSoftware/Brave-Browser/NativeMessagingHosts",
                "Brave Browser.app"),
        Browser("vivaldi", "Vivaldi", CHROMIUM, ("vivaldi", "vivaldi-stable"), None,
                "com.vivaldi.Vivaldi", "config/vivaldi/NativeMessagingHosts", "Vivaldi.app"),
        Browser("firefox", "Firefox", FIREFOX, ("firefox", "firefox-esr"), "firefox",
                "org.mozilla.firefox", ".mozilla/native-messaging-hosts", "Firefox.app"),
        Browser("librewolf", "LibreWolf", FIREFOX, ("librewolf",), None,
                "io.gitlab.librewolf-community", ".librewolf/native-messaging-hosts", "LibreWolf.app"),
    )
}

ALIASES = {
    "google-chrome": "chrome", "chrome-stable": "chrome", "msedge": "edge", "microsoft-edge": "edge",
    "brave-browser": "brave", "firefox-esr": "firefox", "mozilla": "firefox", "chromium-browser": "chromium",
}

# {home}: the user's home; {config}: $XDG_CONFIG_HOME or ~/.config. System paths are
# absolute and get re-rooted under ``root`` (tests use a temporary root).
_MANIFEST_DIRS: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    (LINUX, USER): {
        "chrome": ("{config}/google-chrome/NativeMessagingHosts",),
        "chromium": ("{config}/chromium/NativeMessagingHosts",),
        "edge": ("{config}/microsoft-edge/NativeMessagingHosts",),
        "brave": ("{config}/BraveSoftware/Brave-Browser/NativeMessagingHosts",),
        "vivaldi": ("{config}/vivaldi/NativeMessagingHosts",),
        "firefox": ("{home}/.mozilla/native-messaging-hosts",),
        "librewolf": ("{home}/.librewolf/native-messaging-hosts",),
    },
    (LINUX, SYSTEM): {
        "chrome": ("/etc/opt/chrome/native-messaging-hosts",),
        "chromium": ("/etc/chromium/native-messaging-hosts",),
        "edge": ("/etc/opt/edge/native-messaging-hosts",),
        "brave": ("/etc/opt/chrome/native-messaging-hosts",),
        "vivaldi": ("/etc/vivaldi/native-messaging-hosts",),
        "firefox": ("/usr/lib/mozilla/native-messaging-hosts", "/usr/lib64/mozilla/native-messaging-hosts"),
        "librewolf": ("/usr/lib/librewolf/native-messaging-hosts",),
    },
    (MACOS, USER): {
        "chrome": ("{home}/Library/Application Support/Google/Chrome/NativeMessagingHosts",),
        "chromium": ("{home}/Library/Application Support/Chromium/NativeMessagingHosts",),
        "edge": ("{home}/Library/Application Support/Microsoft Edge/NativeMessagingHosts",),
        "brave": ("{home}/Library/Application Support/BraveSoftware/Brave-Browser/NativeMessagingHosts",
                  "{home}/Library/Application Support/Google/Chrome/NativeMessagingHosts"),
        "vivaldi": ("{home}/Library/Application Support/Vivaldi/NativeMessagingHosts",),
        "firefox": ("{home}/Library/Application Support/Mozilla/NativeMessagingHosts",),
        "librewolf": ("{home}/Library/Application Support/LibreWolf/NativeMessagingHosts",),
    },
    (MACOS, SYSTEM): {
        "chrome": ("/Library/Google/Chrome/NativeMessagingHosts",),
        "chromium": ("/Library/Application Support/Chromium/NativeMessagingHosts",),
        "edge": ("/Library/Microsoft/Edge/NativeMessagingHosts",),
        "brave": ("/Library/Google/Chrome/NativeMessagingHosts",),
        "vivaldi": ("/Library/Application Support/Vivaldi/NativeMessagingHosts",),
        "firefox": ("/Library/Application Support/Mozilla/NativeMessagingHosts",),
        "librewolf": ("/Library/Application Support/LibreWolf/NativeMessagingHosts",),
    },
}

# Windows: parents of the key; the key itself is <parent>\hybrid_engine under HKCU (user) or HKLM (system).
_WINDOWS_KEYS: dict[str, tuple[str, ...]] = {
    "chrome": (r"Software\Google\Chrome\NativeMessagingHosts",),
    "chromium": (r"Software\Chromium\NativeMessagingHosts", r"Software\Google\Chrome\NativeMessagingHosts"),
    "edge": (r"Software\Microsoft\Edge\NativeMessagingHosts",),
    "brave": (r"Software\BraveSoftware\Brave-Browser\NativeMessagingHosts",
              r"Software\Google\Chrome\NativeMessagingHosts"),
    "vivaldi": (r"Software\Vivaldi\NativeMessagingHosts", r"Software\Google\Chrome\NativeMessagingHosts"),
    "firefox": (r"Software\Mozilla\NativeMessagingHosts",),
    "librewolf": (r"Software\Mozilla\NativeMessagingHosts",),
}

# Evidence that a browser is installed for this user (any one suffices).
_PRESENCE: dict[str, dict[str, tuple[str, ...]]] = {
    LINUX: {
        "chrome": ("{config}/google-chrome", "/opt/google/chrome"),
        "chromium": ("{config}/chromium", "/usr/lib/chromium", "/usr/lib/chromium-browser"),
        "edge": ("{config}/microsoft-edge", "/opt/microsoft/msedge"),
        "brave": ("{config}/BraveSoftware/Brave-Browser", "/opt/brave.com/brave"),
        "vivaldi": ("{config}/vivaldi", "/opt/vivaldi"),
        "firefox": ("{home}/.mozilla/firefox", "/usr/lib/firefox", "/usr/lib/firefox-esr"),
        "librewolf": ("{home}/.librewolf", "/usr/share/librewolf", "/usr/lib/librewolf"),
    },
    MACOS: {
        "chrome": ("{home}/Library/Application Support/Google/Chrome",),
        "chromium": ("{home}/Library/Application Support/Chromium",),
        "edge": ("{home}/Library/Application Support/Microsoft Edge",),
        "brave": ("{home}/Library/Application Support/BraveSoftware/Brave-Browser",),
        "vivaldi": ("{home}/Library/Application Support/Vivaldi",),
        "firefox": ("{home}/Library/Application Support/Firefox",),
        "librewolf": ("{home}/Library/Application Support/librewolf",),
    },
    WINDOWS: {
        "chrome": ("{local}/Google/Chrome/User Data",),
        "chromium": ("{local}/Chromium/User Data",),
        "edge": ("{local}/Microsoft/Edge/User Data",),
        "brave": ("{local}/BraveSoftware/Brave-Browser/User Data",),
        "vivaldi": ("{local}/Vivaldi/User Data",),
        "firefox": ("{roaming}/Mozilla/Firefox",),
        "librewolf": ("{roaming}/librewolf",),
    },
}


def current_os() -> str:
    if sys.platform.startswith("win"):
        return WINDOWS
    if sys.platform == "darwin":
        return MACOS
    return LINUX


def _check_os(os_name: str) -> str:
    if os_name not in OSES:
        raise BadRequest(f"unknown OS {os_name!r}; expected one of {', '.join(OSES)}")
    return os_name


def browser_key(name: str) -> str:
    """Normalise a browser name given by a user ('Google-Chrome' -> 'chrome')."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BROWSERS:
        raise BadRequest(f"unknown browser {name!r}; known: {', '.join(BROWSERS)}", field="browser")
    return key


def _expand(template: str, home: Path, config_home: Path | None, root: Path) -> Path:
    if template.startswith("{home}"):
        return home / template[len("{home}/"):]
    if template.startswith("{config}"):
        return (config_home or home / ".config") / template[len("{config}/"):]
    return root / template.lstrip("/")


def manifest_dirs(browser: str, os_name: str, scope: str = USER, *, home: Path | str,
                  config_home: Path | str | None = None, root: Path | str = "/") -> list[Path]:
    """The folders a browser reads ``hybrid_engine.json`` from (Linux, macOS). Pure.

    On Windows there are no such folders (see ``registry_keys``): returns [].
    """
    _check_os(os_name)
    if os_name == WINDOWS:
        return []
    templates = _MANIFEST_DIRS[(os_name, scope)][browser_key(browser)]
    ch = Path(config_home) if config_home else None
    return [_expand(t, Path(home), ch, Path(root)) for t in templates]


def registry_keys(browser: str, scope: str = USER) -> list[tuple[str, str]]:
    """(hive, key) pairs a browser reads on Windows; the key's default value is the manifest path."""
    hive = "HKCU" if scope == USER else "HKLM"
    return [(hive, f"{parent}\\{HOST_NAME}") for parent in _WINDOWS_KEYS[browser_key(browser)]]


def flatpak_manifest_dir(browser: str, home: Path | str) -> Path | None:
    b = BROWSERS[browser_key(browser)]
    if not b.flatpak_id:
        return None
    return Path(home) / ".var" / "app" / b.flatpak_id / b.flatpak_dir


def flatpak_wrapper_path(browser: str, home: Path | str) -> Path | None:
    b = BROWSERS[browser_key(browser)]
    if not b.flatpak_id:
        return None
    return Path(home) / ".var" / "app" / b.flatpak_id / _FLATPAK_WRAPPER_DIR / LAUNCHER_NAME


def launcher_path(data_dir: Path | str, os_name: str | None = None) -> Path:
    os_name = _check_os(os_name or current_os())
    name = LAUNCHER_NAME + (".bat" if os_name == WINDOWS else "")
    return Path(data_dir) / "bin" / name


def windows_manifest_path(family: str, data_dir: Path | str) -> Path:
    """Windows keeps manifests under the data folder; one per manifest shape."""
    return Path(data_dir) / "native-messaging" / family / MANIFEST_NAME


def record_path(data_dir: Path | str | None = None) -> Path:
    return Path(data_dir or config.data_dir()) / RECORD_NAME


# ---- contents --------------------------------------------------------------

def split_extension_ids(ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """Sort user-given ids into Chrome ids and Firefox add-on ids; BadRequest on junk.

    Accepts a bare Chrome id, a ``chrome-extension://<id>/`` origin (slash optional),
    or a Gecko id (``name@domain`` or ``{uuid}``).
    """
    chrome: list[str] = []
    gecko: list[str] = []
    for raw in ids:
        value = (raw or "").strip()
        m = re.match(r"^chrome-extension://([^/]+)/?$", value)
        candidate = m.group(1) if m else value
        if is_chrome_extension_id(candidate):
            if candidate not in chrome:
                chrome.append(candidate)
        elif _GECKO_ID.match(value):
            if value not in gecko:
                gecko.append(value)
        else:
            raise BadRequest(
                f"{raw!r} is neither a Chrome extension id (32 letters a-p) nor a Firefox add-on id "
                "(name@domain or {uuid})", field="extension_id")
    return chrome, gecko


def build_manifest(family: str, launcher: Path | str, chrome_ids: Sequence[str] = (),
                   gecko_ids: Sequence[str] = ()) -> dict:
    """The host manifest for one browser family. The pinned ids always come first."""
    manifest = {"name": HOST_NAME, "description": DESCRIPTION, "path": str(launcher), "type": "stdio"}
    if family == CHROMIUM:
        ids = [CHROME_EXTENSION_ID] + [i for i in chrome_ids if i != CHROME_EXTENSION_ID]
        manifest["allowed_origins"] = [chrome_origin(i) for i in ids]
    else:
        manifest["allowed_extensions"] = [FIREFOX_EXTENSION_ID] + [i for i in gecko_ids if i != FIREFOX_EXTENSION_ID]
    return manifest


def launcher_script(python: str, os_name: str, home_override: str | None = None) -> str:
    """The launcher's text: the absolute interpreter, never a PATH lookup."""
    _check_os(os_name)
    if os_name == WINDOWS:
        lines = ["@echo off", "rem Hybrid Engine native-messaging host, written by `hybrid-engine install`."]
        if home_override:
            lines.append(f'set "HYBRID_ENGINE_HOME={home_override}"')
        lines.append(f'"{python}" -m hybrid_engine host %*')
        return "\r\n".join(lines) + "\r\n"
    lines = [
        "#!/bin/sh",
        "# Hybrid Engine native-messaging host, written by `hybrid-engine install`.",
        "# Browsers start this with a minimal environment: absolute paths only.",
    ]
    if home_override:
        lines.append(f"HYBRID_ENGINE_HOME={shlex.quote(home_override)}; export HYBRID_ENGINE_HOME")
    lines.append(f'exec {shlex.quote(python)} -m hybrid_engine host "$@"')
    return "\n".join(lines) + "\n"


def flatpak_wrapper_script(launcher: Path | str, app_id: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# Runs the Hybrid Engine host outside the {app_id} sandbox. Needs:\n"
        f"#   flatpak override --user --talk-name=org.freedesktop.Flatpak {app_id}\n"
        f'exec {_FLATPAK_SPAWN} --host {shlex.quote(str(launcher))} "$@"\n'
    )


# ---- plans -----------------------------------------------------------------

@dataclass
class Registration:
    """One manifest location (and, on Windows, the registry key pointing to it)."""

    browsers: list[str]
    family: str
    scope: str
    manifest: str
    launcher: str  # what the manifest's "path" names
    registry_key: str | None = None
    hive: str | None = None
    flatpak_app: str | None = None
    user_data_dir: str | None = None  # a browser profile folder given with --user-data-dir

    @property
    def ident(self) -> tuple[str, str | None, str | None]:
        return (self.manifest, self.hive, self.registry_key)

    @property
    def location(self) -> str:
        if self.registry_key:
            return f"{self.hive}\\{self.registry_key}"
        return self.manifest

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Registration":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def plan_registrations(browsers: Iterable[str], os_name: str, scope: str, *, home: Path | str,
                       data_dir: Path | str, launcher: Path | str, root: Path | str = "/",
                       config_home: Path | str | None = None,
                       flatpak_browsers: Iterable[str] = ()) -> list[Registration]:
    """Where install will write, merged so a folder shared by browsers is written once."""
    _check_os(os_name)
    plans: dict[tuple, Registration] = {}

    def add(reg: Registration, browser: str) -> None:
        existing = plans.get(reg.ident)
        if existing is None:
            plans[reg.ident] = reg
        elif browser not in existing.browsers:
            existing.browsers.append(browser)

    for name in browsers:
        key = browser_key(name)
        family = BROWSERS[key].family
        if os_name == WINDOWS:
            manifest = windows_manifest_path(family, data_dir)
            for hive, reg_key in registry_keys(key, scope):
                add(Registration([key], family, scope, str(manifest), str(launcher), reg_key, hive), key)
            continue
        for folder in manifest_dirs(key, os_name, scope, home=home, config_home=config_home, root=root):
            if "lib64" in folder.parts and not _real_dir(Path(root) / "usr" / "lib64"):
                continue  # /usr/lib64 only where the system has one of its own
            add(Registration([key], family, scope, str(folder / MANIFEST_NAME), str(launcher)), key)
    if os_name == LINUX and scope == USER:
        for name in flatpak_browsers:
            key = browser_key(name)
            b = BROWSERS[key]
            folder = flatpak_manifest_dir(key, home)
            wrapper = flatpak_wrapper_path(key, home)
            if folder and wrapper:
                add(Registration([key], b.family, scope, str(folder / MANIFEST_NAME), str(wrapper),
                                 flatpak_app=b.flatpak_id), key)
    return list(plans.values())


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def profile_manifest(user_data_dir: Path | str) -> Path:
    """Where a Chromium-family browser started with --user-data-dir=DIR looks for our manifest."""
    return Path(user_data_dir) / "NativeMessagingHosts" / MANIFEST_NAME


def plan_profile_registrations(browsers: Iterable[str] | None, user_data_dirs: Iterable[str], os_name: str,
                               launcher: Path | str) -> tuple[list[Registration], list[str], list[str]]:
    """Registrations inside browser profile folders; (registrations, browsers they cover, notes).

    Only Chromium-family browsers keep native hosts in their profile folder; named Firefox-family
    browsers keep their usual registration (a note says why), and on Windows the registry serves
    every profile, so nothing is planned there.
    """
    dirs = []
    for raw in user_data_dirs:
        if not raw or not raw.strip():
            raise BadRequest("--user-data-dir: expected a folder", field="user_data_dir")
        folder = Path(raw).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise BadRequest(f"--user-data-dir: {folder} is not a folder", field="user_data_dir")
        if folder not in dirs:
            dirs.append(folder)
    named = [browser_key(b) for b in browsers] if browsers is not None else None
    chromium = [k for k in named if BROWSERS[k].family == CHROMIUM] if named is not None else ["chromium"]
    notes = []
    if named is not None and any(BROWSERS[k].family == FIREFOX for k in named):
        notes.append("Firefox has no per-profile folder for native hosts (every profile, -profile DIR included, "
                     "reads ~/.mozilla/native-messaging-hosts): it is registered there as usual")
    if os_name == WINDOWS:
        notes.append("on Windows every profile of a browser reads the registry, so --user-data-dir needs nothing "
                     "more: the usual registration serves it")
        return [], [], notes
    if not chromium:
        if not notes:
            notes.append("--user-data-dir is for Chromium-family browsers (chrome, chromium, edge, brave, vivaldi); "
                         "none was named, so no profile folder was written")
        return [], [], notes
    regs = [Registration(list(chromium), CHROMIUM, USER, str(profile_manifest(d)), str(launcher), user_data_dir=str(d))
            for d in dirs]
    return regs, chromium, notes


# ---- detection -------------------------------------------------------------

@dataclass
class Presence:
    browser: str
    native: bool = False
    flatpak: bool = False
    snap: bool = False
    evidence: list[str] = field(default_factory=list)


def _windows_dirs(home: Path) -> tuple[Path, Path]:
    """%LOCALAPPDATA% and %APPDATA% as they are by default under a profile folder."""
    return home / "AppData" / "Local", home / "AppData" / "Roaming"


def _snap_present(name: str, home: Path, root: Path) -> bool:
    return any(p.exists() for p in (root / "snap" / "bin" / name, root / "snap" / name, home / "snap" / name))


def _flatpak_present(app_id: str, home: Path, root: Path) -> bool:
    return any(p.is_dir() for p in (
        home / ".var" / "app" / app_id,
        home / ".local" / "share" / "flatpak" / "app" / app_id,
        root / "var" / "lib" / "flatpak" / "app" / app_id,
    ))


def detect_browsers(os_name: str | None = None, home: Path | str | None = None, *, root: Path | str = "/",
                    config_home: Path | str | None = None, path_env: str | None = None) -> dict[str, Presence]:
    """Which browsers look installed for this user: config folder, program, Flatpak, Snap."""
    os_name = _check_os(os_name or current_os())
    home = Path(home) if home else Path.home()
    root = Path(root)
    ch = Path(config_home) if config_home else home / ".config"
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    local, roaming = _windows_dirs(home) if os_name == WINDOWS else (home, home)
    found: dict[str, Presence] = {}
    for key, b in BROWSERS.items():
        p = Presence(key)
        for template in _PRESENCE[os_name][key]:
            path = (Path(template.replace("{local}", str(local)).replace("{roaming}", str(roaming)))
                    if os_name == WINDOWS else _expand(template, home, ch, root))
            if path.exists():
                p.native = True
                p.evidence.append(str(path))
        if os_name == MACOS:
            for apps in (root / "Applications", home / "Applications"):
                if (apps / b.macos_app).exists():
                    p.native = True
                    p.evidence.append(str(apps / b.macos_app))
        if os_name == LINUX:
            if b.snap and _snap_present(b.snap, home, root):
                p.snap = True
                p.evidence.append(f"snap:{b.snap}")
            for program in b.binaries:
                found_at = shutil.which(program, path=path_env) if path_env else None
                if found_at and not found_at.startswith("/snap/"):
                    if p.snap and program == "chromium-browser":
                        continue  # Ubuntu's chromium-browser is a wrapper around the snap
                    p.native = True
                    p.evidence.append(found_at)
            if b.flatpak_id and _flatpak_present(b.flatpak_id, home, root):
                p.flatpak = True
                p.evidence.append(f"flatpak:{b.flatpak_id}")
        if p.snap and key == "firefox":
            p.native = True  # the Snap reaches hosts through the portal, which reads ~/.mozilla
        found[key] = p
    return found


# ---- registry --------------------------------------------------------------

class Registry(Protocol):
    def get_default(self, hive: str, key: str) -> str | None: ...
    def set_default(self, hive: str, key: str, value: str) -> None: ...
    def delete(self, hive: str, key: str) -> bool: ...


class MemoryRegistry:
    """A registry in a dict: for tests and dry runs on any OS. Keys are case-insensitive."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get_default(self, hive: str, key: str) -> str | None:
        return self.values.get((hive, key.lower()))

    def set_default(self, hive: str, key: str, value: str) -> None:
        self.values[(hive, key.lower())] = value

    def delete(self, hive: str, key: str) -> bool:
        return self.values.pop((hive, key.lower()), None) is not None


class WindowsRegistry:
    """HKCU/HKLM through winreg (Windows only)."""

    def __init__(self) -> None:
        import winreg  # noqa: PLC0415 - only exists on Windows

        self._winreg = winreg
        self._roots = {"HKCU": winreg.HKEY_CURRENT_USER, "HKLM": winreg.HKEY_LOCAL_MACHINE}

    def get_default(self, hive: str, key: str) -> str | None:
        try:
            with self._winreg.OpenKey(self._roots[hive], key) as handle:
                value, _kind = self._winreg.QueryValueEx(handle, "")
                return str(value)
        except FileNotFoundError:
            return None

    def set_default(self, hive: str, key: str, value: str) -> None:
        with self._winreg.CreateKeyEx(self._roots[hive], key, 0, self._winreg.KEY_WRITE) as handle:
            self._winreg.SetValueEx(handle, "", 0, self._winreg.REG_SZ, value)

    def delete(self, hive: str, key: str) -> bool:
        try:
            self._winreg.DeleteKey(self._roots[hive], key)
            return True
        except FileNotFoundError:
            return False


def _registry_for(os_name: str, registry: Registry | None) -> Registry | None:
    if os_name != WINDOWS:
        return None
    if registry is not None:
        return registry
    if not sys.platform.startswith("win"):
        raise BadRequest("the Windows registry can only be written on Windows (pass a MemoryRegistry to plan)")
    return WindowsRegistry()


# ---- findings and reports --------------------------------------------------

@dataclass(frozen=True)
class Finding:
    code: str  # stable, for tests and scripts: launcher_missing, origin_no_trailing_slash, ...
    severity: str  # error | warning | info
    browser: str  # browser key(s), comma-separated; "" when about the whole setup
    path: str  # the manifest, launcher, registry key or folder concerned
    problem: str
    fix: str  # the exact command or edit

    def to_dict(self) -> dict:
        return asdict(self)


class _Report:
    """What install/uninstall did; ok when nothing failed."""

    errors: list

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        return out


@dataclass
class InstallReport(_Report):
    launcher: str
    python: str
    os: str
    scope: str
    registrations: list[Registration] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"browser", "reason"}
    notes: list[str] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class UninstallReport(_Report):
    removed: list[Registration] = field(default_factory=list)
    kept: list[Registration] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    launcher_removed: bool = False
    dry_run: bool = False


# ---- the record of what was written ---------------------------------------

def load_record(data_dir: Path | str | None = None) -> dict:
    path = record_path(data_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data.setdefault("version", 1)
    data.setdefault("registrations", [])
    data.setdefault("extension_ids", [])
    data.setdefault("gecko_ids", [])
    return data


def save_record(data_dir: Path | str, record: dict) -> None:
    _write_text(record_path(data_dir), json.dumps(record, indent=2) + "\n", mode=0o600)


def recorded_registrations(data_dir: Path | str | None = None) -> list[Registration]:
    return [Registration.from_dict(r) for r in load_record(data_dir)["registrations"] if isinstance(r, dict)]


def registered_extension_ids(data_dir: Path | str | None = None) -> set[str]:
    """Chrome ids the host accepts as its caller: the pinned one plus ``install --extension-id``."""
    ids = {CHROME_EXTENSION_ID}
    ids.update(i for i in load_record(data_dir)["extension_ids"] if isinstance(i, str))
    return ids


def registered_gecko_ids(data_dir: Path | str | None = None) -> set[str]:
    ids = {FIREFOX_EXTENSION_ID}
    ids.update(i for i in load_record(data_dir)["gecko_ids"] if isinstance(i, str))
    return ids


# ---- filesystem helpers ----------------------------------------------------

def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomic write, bytes exactly as given (no newline translation, no BOM)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _is_executable(path: Path) -> bool:
    if sys.platform.startswith("win"):
        return path.is_file()
    return path.is_file() and os.access(path, os.X_OK)


def _install_cmd(browsers: Iterable[str] = (), scope: str = USER, user_data_dir: str | None = None) -> str:
    parts = ["hybrid-engine", "install"]
    for b in browsers:
        parts += ["--browser", b]
    if scope == SYSTEM:
        parts = ["sudo"] + parts + ["--system"]
    if user_data_dir:
        parts += ["--user-data-dir", shlex.quote(user_data_dir)]
    return " ".join(parts)


def _rm_cmd(path: str, scope: str) -> str:
    return ("sudo " if scope == SYSTEM else "") + f"rm {shlex.quote(path)}"


# ---- install / uninstall ---------------------------------------------------

def _resolve(os_name, home, data_dir, root):
    os_name = _check_os(os_name or current_os())
    if home is None:
        home_path = Path.home()
        xdg = os.environ.get("XDG_CONFIG_HOME")
        config_home = Path(xdg) if xdg and os.path.isabs(xdg) and os_name == LINUX else None
    else:
        home_path = Path(home).expanduser()
        config_home = None
    data = Path(data_dir) if data_dir else config.data_dir()
    root_path = Path(root) if root else Path("/")
    return os_name, home_path, config_home, data, root_path


def install(browsers: Iterable[str] | None = None, extension_ids: Iterable[str] = (), system: bool = False,
            home: Path | str | None = None, dry_run: bool = False, *, os_name: str | None = None,
            root: Path | str | None = None, data_dir: Path | str | None = None, python: str | None = None,
            path_env: str | None = None, registry: Registry | None = None,
            user_data_dirs: Iterable[str] = ()) -> InstallReport:
    """Register the host for the browsers present (or the ones named), and verify it.

    ``browsers=None`` writes only for browsers that look installed; naming browsers
    writes for them regardless. ``extension_ids`` adds Chrome ids or Firefox add-on ids
    to the pinned ones; ids given before are kept (uninstall clears them). ``system``
    writes the system-wide folders (or HKLM) instead of the user's. ``dry_run`` plans
    and writes nothing. ``user_data_dirs``: browser profile folders (``--user-data-dir``) to
    register in instead of the Chromium-family browsers' usual folders. Per-location failures
    are reported in ``errors``, not raised; bad arguments raise BadRequest.
    """
    os_name, home_path, config_home, data, root_path = _resolve(os_name, home, data_dir, root)
    scope = SYSTEM if system else USER
    user_data_dirs = list(user_data_dirs)
    if user_data_dirs and system:
        raise BadRequest("--user-data-dir names your own browser profile folder; it does not go with --system",
                         field="user_data_dir")
    chosen_explicitly = browsers is not None
    wanted = [browser_key(b) for b in browsers] if browsers is not None else None
    new_chrome, new_gecko = split_extension_ids(extension_ids)
    record = load_record(data)
    chrome_ids = list(dict.fromkeys([*record["extension_ids"], *new_chrome]))
    gecko_ids = list(dict.fromkeys([*record["gecko_ids"], *new_gecko]))
    python = os.path.abspath(python or sys.executable)  # never resolve symlinks: a venv's python is one
    launcher = launcher_path(data, os_name)
    reg_api = _registry_for(os_name, registry) if not dry_run else (registry or MemoryRegistry())
    report = InstallReport(launcher=str(launcher), python=python, os=os_name, scope=scope, dry_run=dry_run)

    profile_regs: list[Registration] = []
    in_profiles: list[str] = []
    if user_data_dirs:
        profile_regs, in_profiles, notes = plan_profile_registrations(wanted, user_data_dirs, os_name, launcher)
        report.notes.extend(notes)
        if wanted is None:
            wanted = []  # only the profile folders: nothing detected is registered besides them
    presence = detect_browsers(os_name, home_path, root=root_path, config_home=config_home, path_env=path_env)
    native, flatpak = [], []
    for key, p in presence.items():
        if wanted is not None and key not in wanted:
            continue
        if key in in_profiles:
            continue  # registered inside the profile folder(s) named instead
        label = BROWSERS[key].label
        snap_only = p.snap and key != "firefox" and not p.native
        if snap_only:
            why = (f"{label} is a Snap: its confinement cannot start a native host. Install the distribution's "
                   ".deb/.rpm or the Flatpak instead")
            if chosen_explicitly:
                report.notes.append(why)
            else:
                report.skipped.append({"browser": key, "reason": why})
        if p.native or chosen_explicitly:
            native.append(key)
        if p.flatpak and scope == USER and os_name == LINUX:
            flatpak.append(key)
            report.notes.append(
                f"{label} (Flatpak {BROWSERS[key].flatpak_id}) runs the host through flatpak-spawn; allow it once "
                f"with: flatpak override --user --talk-name=org.freedesktop.Flatpak {BROWSERS[key].flatpak_id}")
        if p.snap and key == "firefox":
            report.notes.append("Firefox is a Snap: it starts native hosts through the xdg-desktop-portal "
                                "WebExtensions portal, which reads ~/.mozilla/native-messaging-hosts and asks "
                                "you once to allow the host")
        if not (p.native or p.flatpak or chosen_explicitly or snap_only):
            report.skipped.append({"browser": key, "reason": "not found (no profile folder or program)"})
    if not native and not flatpak and not profile_regs:
        report.notes.append("no browser found to register; name one with --browser")

    regs = plan_registrations(native, os_name, scope, home=home_path, data_dir=data, launcher=launcher,
                              root=root_path, config_home=config_home, flatpak_browsers=flatpak)
    regs += profile_regs
    if dry_run:
        report.registrations = regs
        return report

    home_override = os.environ.get("HYBRID_ENGINE_HOME") or None
    try:
        _write_text(launcher, launcher_script(python, os_name, home_override), mode=0o755)
        if not _is_executable(launcher) and os_name != WINDOWS:
            raise OSError(f"{launcher} is not executable after writing it")
    except OSError as exc:
        report.errors.append(Finding("launcher_write_failed", ERROR, "", str(launcher), str(exc),
                                     f"make {launcher.parent} writable, then run: {_install_cmd()}"))
        return report

    for reg in regs:
        try:
            _write_registration(reg, os_name, chrome_ids, gecko_ids, launcher, reg_api)
            report.registrations.append(reg)
        except (OSError, ValueError) as exc:
            fix = (f"run: {_install_cmd(reg.browsers, SYSTEM)}" if scope == SYSTEM
                   else f"make {Path(reg.manifest).parent} writable by you, then run: {_install_cmd(reg.browsers)}")
            report.errors.append(Finding("write_failed", ERROR, ",".join(reg.browsers), reg.location,
                                         f"could not write or verify the registration: {exc}", fix))

    kept = [r for r in (Registration.from_dict(d) for d in record["registrations"] if isinstance(d, dict))
            if r.ident not in {n.ident for n in report.registrations}]
    record.update({
        "version": 1,
        "launcher": str(launcher),
        "python": python,
        "extension_ids": chrome_ids,
        "gecko_ids": gecko_ids,
        "registrations": [r.to_dict() for r in kept + report.registrations],
    })
    try:
        save_record(data, record)
    except OSError as exc:
        report.errors.append(Finding("record_write_failed", ERROR, "", str(record_path(data)), str(exc),
                                     f"make {data} writable, then run: {_install_cmd()}"))
    return report


def _write_registration(reg: Registration, os_name: str, chrome_ids, gecko_ids, launcher: Path,
                        reg_api: Registry | None) -> None:
    if reg.flatpak_app:
        _write_text(Path(reg.launcher), flatpak_wrapper_script(launcher, reg.flatpak_app), mode=0o755)
    manifest = build_manifest(reg.family, reg.launcher, chrome_ids, gecko_ids)
    path = Path(reg.manifest)
    _write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    raw = path.read_bytes()  # verify: what the browser will read
    if raw.startswith(_UTF8_BOM) or json.loads(raw.decode("utf-8")) != manifest:
        raise ValueError(f"{path} does not read back as the manifest that was written")
    if os_name == WINDOWS and reg.registry_key and reg_api is not None:
        reg_api.set_default(reg.hive, reg.registry_key, str(path))
        if reg_api.get_default(reg.hive, reg.registry_key) != str(path):
            raise ValueError(f"{reg.hive}\\{reg.registry_key} does not read back as {path}")


def _is_our_manifest(path: Path) -> bool:
    try:
        raw = path.read_bytes()
        data = json.loads(raw[len(_UTF8_BOM):] if raw.startswith(_UTF8_BOM) else raw)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("name") == HOST_NAME


def uninstall(browsers: Iterable[str] | None = None, system: bool | None = None,
              home: Path | str | None = None, dry_run: bool = False, *, os_name: str | None = None,
              data_dir: Path | str | None = None, registry: Registry | None = None) -> UninstallReport:
    """Remove exactly what install recorded (for the browsers named, or all of it).

    ``system``: True removes only system-wide registrations, False only the user's,
    None both. A folder shared by several browsers is kept while another of them
    still uses it. The launcher and the record go when nothing is left.
    """
    os_name, _home, _config_home, data, _root = _resolve(os_name, home, data_dir, None)
    wanted = {browser_key(b) for b in browsers} if browsers is not None else None
    record = load_record(data)
    regs = [Registration.from_dict(d) for d in record["registrations"] if isinstance(d, dict)]
    reg_api = _registry_for(os_name, registry) if (not dry_run and any(r.registry_key for r in regs)) else registry
    report = UninstallReport(dry_run=dry_run)
    remaining: list[Registration] = []
    to_remove: list[Registration] = []
    for reg in regs:
        scope_match = system is None or (reg.scope == SYSTEM) == system
        ours = set(reg.browsers) if wanted is None else set(reg.browsers) & wanted
        if not scope_match or not ours:
            remaining.append(reg)
            continue
        others = [b for b in reg.browsers if b not in ours]
        if others:  # a folder other browsers read too: keep it for them
            remaining.append(Registration(**{**reg.to_dict(), "browsers": others}))
            report.kept.append(reg)
            report.notes.append(f"kept {reg.location}: {', '.join(others)} also read it")
            continue
        to_remove.append(reg)
    still_used = {r.manifest for r in remaining}
    for reg in to_remove:
        if dry_run:
            report.removed.append(reg)
            continue
        try:
            if reg.registry_key and reg_api is not None:
                current = reg_api.get_default(reg.hive, reg.registry_key)
                if current is None or os.path.normcase(current) == os.path.normcase(reg.manifest):
                    reg_api.delete(reg.hive, reg.registry_key)
                else:
                    report.notes.append(f"left {reg.location}: it now points to {current}, not ours")
            path = Path(reg.manifest)
            if reg.manifest not in still_used and path.exists():
                if _is_our_manifest(path):
                    path.unlink()
                else:
                    report.notes.append(f"left {path}: it is not a {HOST_NAME} manifest any more")
            if reg.flatpak_app:
                wrapper = Path(reg.launcher)
                if wrapper.exists():
                    wrapper.unlink()
                    _remove_empty_dirs(wrapper.parent, stop=2)
            if reg.user_data_dir and reg.manifest not in still_used:
                _remove_empty_dirs(Path(reg.manifest).parent, stop=1)  # the profile folder itself stays
            report.removed.append(reg)
        except OSError as exc:
            remaining.append(reg)
            fix = (f"sudo hybrid-engine uninstall --system" if reg.scope == SYSTEM
                   else f"{_rm_cmd(reg.manifest, reg.scope)}")
            report.errors.append(Finding("remove_failed", ERROR, ",".join(reg.browsers), reg.location, str(exc), fix))
    if dry_run:
        return report
    if remaining:
        record["registrations"] = [r.to_dict() for r in remaining]
        save_record(data, record)
        return report
    launcher = Path(record.get("launcher") or launcher_path(data, os_name))
    if launcher.exists():
        launcher.unlink()
        report.launcher_removed = True
        _remove_empty_dirs(launcher.parent, stop=1)
    for manifest in {Path(r.manifest) for r in regs if r.registry_key}:
        _remove_empty_dirs(manifest.parent, stop=2)
    record_path(data).unlink(missing_ok=True)
    return report


def _remove_empty_dirs(folder: Path, stop: int) -> None:
    for _ in range(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# ---- talking to the host ---------------------------------------------------

@dataclass
class HostCheck:
    ok: bool
    elapsed_s: float
    reply: dict | None = None
    problem: str = ""


def check_host(launcher: Path | str, argv: Sequence[str] = (), timeout: float = HELLO_TIMEOUT_S,
               hello: dict | None = None) -> HostCheck:
    """Start the launcher as a browser would, send a hello frame, expect a reply in time.

    ``argv`` is what the browser passes (Chrome: the origin; Firefox: the manifest
    path and the add-on id). The process is stopped afterwards.
    """
    from . import protocol  # noqa: PLC0415 - keep install importable without the framing module loaded

    hello = dict(HELLO if hello is None else hello)
    launcher = Path(launcher)
    started = time.monotonic()
    stderr = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([str(launcher), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, cwd=str(launcher.parent), start_new_session=True)
    except OSError as exc:
        stderr.close()
        return HostCheck(False, time.monotonic() - started, problem=f"could not start {launcher}: {exc}")
    result: dict = {}

    def read_reply() -> None:
        try:
            assembler = protocol.Reassembler()
            while True:
                message = protocol.read_message(proc.stdout)
                if message is None:
                    result["problem"] = "the host closed its output without answering"
                    return
                whole = assembler.feed(message)
                if whole is not None and "event" not in whole:
                    result["reply"] = whole
                    return
        except protocol.ProtocolError as exc:
            result["problem"] = f"the host wrote something that is not a valid frame: {exc.message}"
        except (OSError, ValueError) as exc:
            result["problem"] = f"reading the host's answer failed: {exc}"

    reader = threading.Thread(target=read_reply, daemon=True)
    reader.start()
    try:
        proc.stdin.write(protocol.encode_message(hello)[0])
        proc.stdin.flush()
    except OSError:
        pass  # the host exited at once; the reader reports what it saw
    reader.join(timeout)
    elapsed = time.monotonic() - started
    timed_out = reader.is_alive()
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(0.5)
    stderr.seek(0)
    err_tail = stderr.read()[-400:].decode("utf-8", "replace").strip()
    stderr.close()
    if proc.stdout:
        proc.stdout.close()
    reply = None if timed_out else result.get("reply")
    if reply is None:
        problem = result.get("problem") or "no answer"
        if timed_out:
            problem = f"no answer to hello within {timeout:g} s"
        if err_tail:
            problem += f"; its stderr ends with: {err_tail}"
        return HostCheck(False, elapsed, problem=problem)
    if reply.get("id") != hello.get("id") or reply.get("ok") is not True:
        err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        detail = f"{err.get('code')}: {err.get('message')}" if err else json.dumps(reply)[:200]
        return HostCheck(False, elapsed, reply, problem=f"the host answered hello with an error ({detail})")
    return HostCheck(True, elapsed, reply)


def _hello_by_hand(launcher: str) -> str:
    """A shell line that sends the hello frame to a launcher and shows what comes back."""
    from .protocol import encode_message  # noqa: PLC0415

    data = encode_message(HELLO)[0]
    escaped = "".join(chr(b) if 32 <= b < 127 and chr(b) not in "\\'%" else f"\\{b:03o}" for b in data)
    return f"printf '{escaped}' | {shlex.quote(launcher)} | od -c | head"


def _browser_argv(family: str, manifest: str) -> list[str]:
    if family == CHROMIUM:
        return [chrome_origin(CHROME_EXTENSION_ID)]
    return [manifest, FIREFOX_EXTENSION_ID]


# ---- doctor ----------------------------------------------------------------

@dataclass
class _Candidate:
    manifest: Path
    family: str
    scope: str
    browsers: list[str]
    flatpak_app: str | None = None
    registry: str | None = None  # "HKCU\\key" on Windows
    profile: str | None = None  # the --user-data-dir folder it sits in


# ---- browsers running with their own profile folder ---------------------------

# Program names (argv[0]'s last part) of Chromium-family browsers, as started on Linux.
_CHROMIUM_PROGRAMS = {program: b.key for b in BROWSERS.values() if b.family == CHROMIUM for program in b.binaries}
_CHROMIUM_PROGRAMS.update({"chrome": "chrome", "msedge": "edge", "brave": "brave", "vivaldi-bin": "vivaldi",
                           "chromium": "chromium"})


@dataclass(frozen=True)
class RunningProfile:
    browser: str  # browser key
    user_data_dir: str  # absolute
    pid: int


def running_profiles(proc_root: Path | str = "/proc") -> list[RunningProfile]:
    """Chromium-family browsers running with --user-data-dir, read from /proc/<pid>/cmdline (Linux).

    Only browser processes count (their helpers carry --type=...); a relative folder is taken
    from the process's working directory, as the browser itself does. One entry per folder.
    """
    proc = Path(proc_root)
    found: dict[str, RunningProfile] = {}
    try:
        entries = sorted((e for e in proc.iterdir() if e.name.isdigit()), key=lambda e: int(e.name))
    except OSError:
        return []
    for entry in entries:
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        args = [a.decode("utf-8", "surrogateescape") for a in argv if a]
        if not args:
            continue
        browser = _CHROMIUM_PROGRAMS.get(os.path.basename(args[0]))
        if browser is None or any(a.startswith("--type=") for a in args[1:]):
            continue
        folder = next((a.split("=", 1)[1] for a in args[1:] if a.startswith("--user-data-dir=")), None)
        if not folder:
            continue
        folder = os.path.expanduser(folder)
        if not os.path.isabs(folder):
            try:
                folder = os.path.join(os.readlink(entry / "cwd"), folder)
            except OSError:
                continue
        folder = os.path.normpath(folder)
        found.setdefault(folder, RunningProfile(browser, folder, int(entry.name)))
    return list(found.values())


def _candidates(os_name, home, config_home, root, reg_api) -> list[_Candidate]:
    found: dict[str, _Candidate] = {}

    def add(path: Path, family: str, scope: str, browser: str, flatpak_app=None, registry=None) -> None:
        key = str(path) + (registry or "")
        cand = found.get(key)
        if cand is None:
            found[key] = _Candidate(path, family, scope, [browser], flatpak_app, registry)
        elif browser not in cand.browsers:
            cand.browsers.append(browser)

    for key, b in BROWSERS.items():
        for scope in (USER, SYSTEM):
            if os_name == WINDOWS:
                for hive, reg_key in registry_keys(key, scope):
                    value = reg_api.get_default(hive, reg_key) if reg_api else None
                    if value:
                        add(Path(value), b.family, scope, key, registry=f"{hive}\\{reg_key}")
                continue
            for folder in manifest_dirs(key, os_name, scope, home=home, config_home=config_home, root=root):
                if (folder / MANIFEST_NAME).exists():
                    add(folder / MANIFEST_NAME, b.family, scope, key)
        if os_name == LINUX:
            folder = flatpak_manifest_dir(key, home)
            if folder and (folder / MANIFEST_NAME).exists():
                add(folder / MANIFEST_NAME, b.family, USER, key, flatpak_app=b.flatpak_id)
    return list(found.values())


def _check_manifest(c: _Candidate, os_name: str, chrome_ids: Sequence[str], gecko_ids: Sequence[str],
                    findings: list[Finding]) -> dict | None:
    who = ",".join(c.browsers)
    path = str(c.manifest)
    reinstall = _install_cmd(c.browsers, c.scope, c.profile)

    def add(code, severity, problem, fix, where=path):
        findings.append(Finding(code, severity, who, where, problem, fix))

    try:
        raw = c.manifest.read_bytes()
    except FileNotFoundError:
        add("manifest_missing", ERROR, f"{c.registry or 'the registration'} names a manifest that does not exist",
            f"run: {reinstall}")
        return None
    except OSError as exc:
        add("manifest_unreadable", ERROR, f"the manifest cannot be read: {exc}",
            f"{'sudo ' if c.scope == SYSTEM else ''}chmod 644 {shlex.quote(path)}")
        return None
    if raw.startswith(_UTF8_BOM):
        add("manifest_bom", ERROR, "the manifest starts with a UTF-8 byte-order mark, which browsers reject "
            "as invalid JSON", f"run: {reinstall} (rewrites it without the mark), or remove the first 3 bytes: "
            f"sed -i '1s/^\\xEF\\xBB\\xBF//' {shlex.quote(path)}")
        raw = raw[len(_UTF8_BOM):]
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        add("manifest_invalid_json", ERROR, f"the manifest is not valid JSON: {exc}", f"run: {reinstall}")
        return None
    if not isinstance(data, dict):
        add("manifest_invalid_json", ERROR, "the manifest is JSON but not an object", f"run: {reinstall}")
        return None
    if data.get("name") != HOST_NAME:
        add("name_mismatch", ERROR, f"the manifest's name is {data.get('name')!r}; browsers look for "
            f"{HOST_NAME!r} (it must match the file name)", f'set "name": "{HOST_NAME}" in it, or run: {reinstall}')
    if data.get("type") != "stdio":
        add("type_not_stdio", ERROR, f"the manifest's type is {data.get('type')!r}, not \"stdio\"",
            f'set "type": "stdio" in it, or run: {reinstall}')
    _check_ids(data, c, chrome_ids, gecko_ids, add, reinstall)
    _check_launcher(data, c, os_name, add, reinstall)
    return data


def _check_ids(data, c: _Candidate, chrome_ids, gecko_ids, add, reinstall) -> None:
    if c.family == CHROMIUM:
        origins = data.get("allowed_origins")
        if not isinstance(origins, list):
            add("origins_missing", ERROR, "the manifest has no allowed_origins list, so Chromium browsers refuse "
                "every extension ('Access to the specified native messaging host is forbidden')",
                f"run: {reinstall}")
            return
        good, slashless = set(), set()
        for origin in origins:
            text = origin if isinstance(origin, str) else repr(origin)
            if isinstance(origin, str) and (m := _ORIGIN.match(origin)):
                good.add(m.group(1))
            elif isinstance(origin, str) and (m := _ORIGIN_NO_SLASH.match(origin)):
                slashless.add(m.group(1))
                add("origin_no_trailing_slash", ERROR, f"allowed_origins entry {text!r} lacks the trailing slash; "
                    "Chromium compares origins exactly and refuses the extension",
                    f'change "{text}" to "{text}/" in the manifest, or run: {reinstall}')
            else:
                add("origin_malformed", ERROR, f"allowed_origins entry {text!r} is not chrome-extension://<32 "
                    "letters a-p>/ (no wildcards)", f"remove or correct it in the manifest, or run: {reinstall}")
        if CHROME_EXTENSION_ID not in good and CHROME_EXTENSION_ID not in slashless:
            add("pinned_id_missing", ERROR, f"allowed_origins does not include the extension's pinned id "
                f"{CHROME_EXTENSION_ID} (wrong id?): the browser will refuse the connection",
                f'add "{chrome_origin(CHROME_EXTENSION_ID)}" to allowed_origins, or run: {reinstall}')
        for extra in chrome_ids:
            if extra not in good and extra not in slashless:
                add("extension_id_missing", WARNING, f"allowed_origins does not include {extra}",
                    f"run: {_install_cmd(c.browsers, c.scope)} --extension-id {extra}")
    else:
        allowed = data.get("allowed_extensions")
        if not isinstance(allowed, list) or FIREFOX_EXTENSION_ID not in allowed:
            add("gecko_id_missing", ERROR, f"allowed_extensions does not include the add-on id "
                f"{FIREFOX_EXTENSION_ID}: Firefox says 'This extension does not have permission to use native "
                f"application {HOST_NAME}'", f'add "{FIREFOX_EXTENSION_ID}" to allowed_extensions, or run: {reinstall}')
        for extra in gecko_ids:
            if isinstance(allowed, list) and extra not in allowed:
                add("extension_id_missing", WARNING, f"allowed_extensions does not include {extra}",
                    f"run: {_install_cmd(c.browsers, c.scope)} --extension-id {extra}")


def _check_launcher(data, c: _Candidate, os_name, add, reinstall) -> None:
    target = data.get("path")
    if not isinstance(target, str) or not target:
        add("launcher_path_missing", ERROR, "the manifest has no path to the host", f"run: {reinstall}")
        return
    if os_name == WINDOWS:
        # Windows allows a path relative to the manifest's folder
        launcher = Path(target) if PureWindowsPath(target).is_absolute() else c.manifest.parent / target
    elif not PurePosixPath(target).is_absolute():
        add("launcher_path_relative", ERROR, f"the host path {target!r} is relative; Linux and macOS require "
            "an absolute path", f"run: {reinstall}")
        return
    else:
        launcher = Path(target)
    if not launcher.exists():
        add("launcher_missing", ERROR, f"the launcher {launcher} does not exist (the browser reports "
            "'Specified native messaging host not found' or 'Native host has exited')",
            f"run: {reinstall} (writes the launcher and points the manifest at it)", where=target)
        return
    if not _is_executable(launcher) and os_name != WINDOWS:
        add("launcher_not_executable", ERROR, f"the launcher {target} is not executable",
            f"chmod 755 {shlex.quote(target)}", where=target)
        return
    if c.flatpak_app:
        try:
            text = launcher.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        m = re.search(r"--host\s+'?([^'\s]+)'?", text)
        if m and not Path(m.group(1)).exists():
            add("launcher_missing", ERROR, f"the Flatpak wrapper {target} runs {m.group(1)}, which does not exist",
                f"run: {_install_cmd(c.browsers)}", where=m.group(1))
        return
    try:
        text = launcher.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return
    m = _LAUNCHER_PYTHON.search(text)
    if m:
        python = m.group(1) or m.group(2) or m.group(3)
        if not Path(python).exists():
            add("launcher_python_missing", ERROR, f"the launcher runs {python}, which no longer exists "
                "(was the virtual environment moved or deleted?)",
                f"reinstall the package, then run: {reinstall}", where=target)


def _flatpak_allows_host(app_id: str, home: Path, root: Path) -> bool:
    for overrides in (home / ".local/share/flatpak/overrides", root / "var/lib/flatpak/overrides"):
        for name in (app_id, "global"):
            try:
                text = (overrides / name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if re.search(r"^\s*org\.freedesktop\.Flatpak\s*=\s*talk\s*$", text, re.M):
                return True
    return False


def doctor(home: Path | str | None = None, *, extension_ids: Iterable[str] = (), os_name: str | None = None,
           root: Path | str | None = None, data_dir: Path | str | None = None, check_launch: bool = True,
           timeout: float = HELLO_TIMEOUT_S, registry: Registry | None = None,
           path_env: str | None = None, proc_root: Path | str | None = None) -> list[Finding]:
    """Check every registration the browsers could read; each finding names its fix.

    An empty list means: registered, well-formed, and (with ``check_launch``) the
    host answered hello within ``timeout`` seconds. On Linux the running browsers are
    looked at too (``proc_root``, default ``<root>/proc``): one started with
    ``--user-data-dir`` reads only that folder's NativeMessagingHosts.
    """
    os_name, home_path, config_home, data, root_path = _resolve(os_name, home, data_dir, root)
    chrome_extra, gecko_extra = split_extension_ids(extension_ids)
    record = load_record(data)
    chrome_ids = list(dict.fromkeys([*record["extension_ids"], *chrome_extra]))
    gecko_ids = list(dict.fromkeys([*record["gecko_ids"], *gecko_extra]))
    recorded = [Registration.from_dict(d) for d in record["registrations"] if isinstance(d, dict)]
    recorded_paths = {os.path.normcase(r.manifest) for r in recorded}
    current_launcher = str(launcher_path(data, os_name))
    reg_api = registry
    if os_name == WINDOWS and reg_api is None and sys.platform.startswith("win"):
        reg_api = WindowsRegistry()
    findings: list[Finding] = []
    presence = detect_browsers(os_name, home_path, root=root_path, config_home=config_home, path_env=path_env)

    candidates = _candidates(os_name, home_path, config_home, root_path, reg_api)
    running = running_profiles(proc_root or root_path / "proc") if os_name == LINUX else []
    known = {os.path.normcase(str(c.manifest)) for c in candidates}
    profile_manifests = [(r.user_data_dir, list(r.browsers), Path(r.manifest)) for r in recorded if r.user_data_dir]
    profile_manifests += [(p.user_data_dir, [p.browser], profile_manifest(p.user_data_dir)) for p in running]
    for folder, browsers, manifest in profile_manifests:
        if os.path.normcase(str(manifest)) not in known and manifest.exists():
            known.add(os.path.normcase(str(manifest)))
            candidates.append(_Candidate(manifest, CHROMIUM, USER, browsers, profile=folder))
    for p in running:
        manifest = profile_manifest(p.user_data_dir)
        if not manifest.exists():
            label = BROWSERS[p.browser].label
            findings.append(Finding(
                "profile_not_registered", WARNING, p.browser, str(manifest),
                f"{label} (pid {p.pid}) runs with --user-data-dir={p.user_data_dir}, so it looks for native hosts "
                f"only in {manifest.parent}, which has no {MANIFEST_NAME}: the extension cannot reach Hybrid "
                "Engine from it",
                f"run: {_install_cmd([p.browser], USER, p.user_data_dir)}"))
    parsed: dict[str, dict] = {}
    for c in candidates:
        data_ = _check_manifest(c, os_name, chrome_ids, gecko_ids, findings)
        if data_ is not None:
            parsed[str(c.manifest) + (c.registry or "")] = data_

    # launching: once per launcher, only where the static checks found nothing wrong with it
    broken_paths = {f.path for f in findings}
    launched: dict[str, HostCheck] = {}
    if check_launch:
        for c in candidates:
            data_ = parsed.get(str(c.manifest) + (c.registry or ""))
            target = data_.get("path") if data_ else None
            if not isinstance(target, str) or c.flatpak_app or target in broken_paths or str(c.manifest) in broken_paths:
                continue
            if c.profile and os.path.normcase(str(c.manifest)) not in recorded_paths:
                continue  # found through a running browser, written by someone else: read, never launched
            if target not in launched:
                launched[target] = check_host(target, _browser_argv(c.family, str(c.manifest)), timeout)
                result = launched[target]
                if not result.ok:
                    findings.append(Finding(
                        "host_no_answer", ERROR, ",".join(c.browsers), target,
                        f"launching the host and sending hello failed: {result.problem}",
                        f"run it by hand to see its error: {_hello_by_hand(target)}; if the interpreter or "
                        f"package moved, run: {_install_cmd(c.browsers, c.scope)}"))

    # duplicates: a browser reading manifests in both scopes that point to different launchers
    duplicates: set[str] = set()
    for key in BROWSERS:
        user = [c for c in candidates if key in c.browsers and c.scope == USER and not c.flatpak_app
                and not c.profile]
        system = [c for c in candidates if key in c.browsers and c.scope == SYSTEM and not c.flatpak_app]
        for u in user:
            for s in system:
                pu = parsed.get(str(u.manifest) + (u.registry or ""), {}).get("path")
                ps = parsed.get(str(s.manifest) + (s.registry or ""), {}).get("path")
                if pu == ps:
                    continue
                u_ours = os.path.normcase(str(u.manifest)) in recorded_paths
                s_ours = os.path.normcase(str(s.manifest)) in recorded_paths
                if u_ours and not s_ours:
                    stale, fix = s, _rm_cmd(str(s.manifest), SYSTEM)
                elif s_ours and not u_ours:
                    stale, fix = u, _rm_cmd(str(u.manifest), USER)
                else:
                    stale, fix = s, (f"keep one: {_rm_cmd(str(s.manifest), SYSTEM)}  (or "
                                     f"{_rm_cmd(str(u.manifest), USER)}), then: {_install_cmd([key])}")
                where = stale.registry or str(stale.manifest)
                if where in duplicates:
                    continue
                duplicates.add(where)
                findings.append(Finding(
                    "duplicate_manifest", WARNING, key, where,
                    f"{BROWSERS[key].label} has a user manifest ({u.registry or u.manifest} -> {pu}) and a "
                    f"system one ({s.registry or s.manifest} -> {ps}) pointing to different launchers; the user "
                    "one wins, the other is stale and confusing", fix))

    # stale: manifests we did not write that point somewhere other than our launcher
    for c in candidates:
        where = c.registry or str(c.manifest)
        data_ = parsed.get(str(c.manifest) + (c.registry or ""))
        if not data_ or where in duplicates or c.flatpak_app or c.profile:
            continue
        if os.path.normcase(str(c.manifest)) in recorded_paths:
            continue
        target = data_.get("path")
        if isinstance(target, str) and os.path.normcase(target) != os.path.normcase(current_launcher):
            findings.append(Finding(
                "stale_manifest", WARNING, ",".join(c.browsers), where,
                f"a {HOST_NAME} manifest that this install did not write points to {target}, not to "
                f"{current_launcher}", f"remove it: {_rm_cmd(str(c.manifest), c.scope)}; or take it over: "
                f"{_install_cmd(c.browsers, c.scope)}"))

    # recorded registrations that are gone
    present = {os.path.normcase(str(c.manifest)) for c in candidates}
    for reg in recorded:
        if os.path.normcase(reg.manifest) not in present and not Path(reg.manifest).exists():
            findings.append(Finding("registration_missing", ERROR, ",".join(reg.browsers), reg.location,
                                    "install wrote this registration but it is gone",
                                    f"run: {_install_cmd(reg.browsers, reg.scope, reg.user_data_dir)}"))
        elif reg.registry_key and reg_api is not None and not reg_api.get_default(reg.hive, reg.registry_key):
            findings.append(Finding("registration_missing", ERROR, ",".join(reg.browsers), reg.location,
                                    "the registry key install wrote is gone",
                                    f"run: {_install_cmd(reg.browsers, reg.scope)}"))

    # the browsers themselves: Snap, Flatpak, and browsers present but not registered
    registered_browsers = {b for c in candidates if not c.flatpak_app and not c.profile for b in c.browsers}
    for key, p in presence.items():
        b = BROWSERS[key]
        if p.snap and key != "firefox":
            findings.append(Finding(
                "snap_browser", WARNING if p.native else ERROR, key, f"/snap/bin/{b.snap}",
                f"{b.label} is installed as a Snap; its confinement does not allow native messaging hosts "
                "outside the snap, so the extension cannot reach Hybrid Engine from it",
                f"use a non-Snap {b.label} (Debian: sudo apt install chromium; or the Flatpak: flatpak install "
                f"flathub {b.flatpak_id}; then {_install_cmd([key])}), or use Firefox"))
        if p.snap and key == "firefox":
            findings.append(Finding(
                "snap_firefox", INFO, key, str(home_path / ".mozilla/native-messaging-hosts" / MANIFEST_NAME),
                "Firefox is a Snap: it starts native hosts through the xdg-desktop-portal WebExtensions portal "
                "(Ubuntu 22.04+), which reads ~/.mozilla/native-messaging-hosts and asks once for permission",
                "keep xdg-desktop-portal installed and accept the permission prompt; if Firefox says 'No such "
                f"native application', run: {_install_cmd(['firefox'])}"))
        if p.flatpak and b.flatpak_id and os_name == LINUX:
            folder = flatpak_manifest_dir(key, home_path)
            if not (folder / MANIFEST_NAME).exists():
                findings.append(Finding(
                    "flatpak_not_registered", WARNING, key, str(folder / MANIFEST_NAME),
                    f"{b.label} runs as a Flatpak ({b.flatpak_id}) and only sees ~/.var/app/{b.flatpak_id}: "
                    "manifests outside it are invisible to it",
                    f"run: {_install_cmd([key])} (writes the manifest and a flatpak-spawn wrapper inside the "
                    "sandbox)"))
            elif not _flatpak_allows_host(b.flatpak_id, home_path, root_path):
                findings.append(Finding(
                    "flatpak_no_host_access", WARNING, key, str(folder / MANIFEST_NAME),
                    f"{b.label} (Flatpak) must start the host outside its sandbox with flatpak-spawn --host, "
                    "which needs permission to talk to org.freedesktop.Flatpak",
                    f"flatpak override --user --talk-name=org.freedesktop.Flatpak {b.flatpak_id}"))
        if p.native and key not in registered_browsers and (candidates or recorded):
            findings.append(Finding(
                "browser_not_registered", WARNING, key, "",
                f"{b.label} looks installed but has no {HOST_NAME} manifest", f"run: {_install_cmd([key])}"))
    if not candidates and not recorded:
        findings.append(Finding("not_installed", ERROR, "", str(record_path(data)),
                                "the native host is not registered with any browser",
                                f"run: {_install_cmd()}  (or name browsers: --browser chrome --browser firefox)"))
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return findings


__all__ = [
    "HOST_NAME", "MANIFEST_NAME", "LAUNCHER_NAME", "BROWSERS", "LINUX", "MACOS", "WINDOWS", "USER", "SYSTEM",
    "Browser", "Registration", "Presence", "Finding", "InstallReport", "UninstallReport", "HostCheck",
    "MemoryRegistry", "WindowsRegistry",
    "current_os", "browser_key", "manifest_dirs", "registry_keys", "flatpak_manifest_dir", "launcher_path",
    "windows_manifest_path", "record_path", "split_extension_ids", "build_manifest", "launcher_script",
    "plan_registrations", "detect_browsers", "load_record", "registered_extension_ids", "registered_gecko_ids",
    "install", "uninstall", "doctor", "check_host", "profile_manifest", "running_profiles", "RunningProfile",
]
