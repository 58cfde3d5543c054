"""Which browsers are installed here, and which are running with their own profile folder.

Installed: a config folder, a program on PATH, a Flatpak or a Snap is evidence enough.
Running (Linux): a Chromium-family browser started with ``--user-data-dir`` reads native
hosts only from that folder, so doctor has to know about it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .browsers import BROWSERS, CHROMIUM, LINUX, MACOS, PRESENCE, WINDOWS, check_os, current_os, expand


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
    os_name = check_os(os_name or current_os())
    home = Path(home) if home else Path.home()
    root = Path(root)
    ch = Path(config_home) if config_home else home / ".config"
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    local, roaming = _windows_dirs(home) if os_name == WINDOWS else (home, home)
    found: dict[str, Presence] = {}
    for key, b in BROWSERS.items():
        p = Presence(key)
        for template in PRESENCE[os_name][key]:
            path = (Path(template.replace("{local}", str(local)).replace("{roaming}", str(roaming)))
                    if os_name == WINDOWS else expand(template, home, ch, root))
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

