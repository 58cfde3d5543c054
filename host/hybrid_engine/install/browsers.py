"""Which browsers there are and where each one looks for the host, per OS and scope.

The tables and the functions over them take the OS, home and root as parameters, so every
layout is testable anywhere; only ``resolve`` reads the environment for their defaults.

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

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..errors import BadRequest

HOST_NAME = "hybrid_engine"
MANIFEST_NAME = f"{HOST_NAME}.json"
LAUNCHER_NAME = "hybrid-engine-host"

LINUX, MACOS, WINDOWS = "linux", "darwin", "windows"
OSES = (LINUX, MACOS, WINDOWS)
USER, SYSTEM = "user", "system"
CHROMIUM, FIREFOX = "chromium", "firefox"

_FLATPAK_WRAPPER_DIR = "data/hybrid-engine"


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
PRESENCE: dict[str, dict[str, tuple[str, ...]]] = {
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


def check_os(os_name: str) -> str:
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


def expand(template: str, home: Path, config_home: Path | None, root: Path) -> Path:
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
    check_os(os_name)
    if os_name == WINDOWS:
        return []
    templates = _MANIFEST_DIRS[(os_name, scope)][browser_key(browser)]
    ch = Path(config_home) if config_home else None
    return [expand(t, Path(home), ch, Path(root)) for t in templates]


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
    os_name = check_os(os_name or current_os())
    name = LAUNCHER_NAME + (".bat" if os_name == WINDOWS else "")
    return Path(data_dir) / "bin" / name


def windows_manifest_path(family: str, data_dir: Path | str) -> Path:
    """Windows keeps manifests under the data folder; one per manifest shape."""
    return Path(data_dir) / "native-messaging" / family / MANIFEST_NAME


def profile_manifest(user_data_dir: Path | str) -> Path:
    """Where a Chromium-family browser started with --user-data-dir=DIR looks for our manifest."""
    return Path(user_data_dir) / "NativeMessagingHosts" / MANIFEST_NAME


def resolve(os_name, home, data_dir, root):
    """(os, home, config home, data folder, root) for install, uninstall and doctor.

    $XDG_CONFIG_HOME (absolute, Linux) counts only for the real home; a home passed in
    keeps its own ``.config``.
    """
    os_name = check_os(os_name or current_os())
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

