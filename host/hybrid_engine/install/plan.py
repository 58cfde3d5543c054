"""Where install will write, decided before anything is written (``install --dry-run`` shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import BadRequest
from .browsers import (BROWSERS, CHROMIUM, FIREFOX, LINUX, MANIFEST_NAME, USER, WINDOWS, browser_key, check_os,
                       flatpak_manifest_dir, flatpak_wrapper_path, manifest_dirs, profile_manifest, registry_keys,
                       windows_manifest_path)
from .record import Registration


def plan_registrations(browsers: Iterable[str], os_name: str, scope: str, *, home: Path | str,
                       data_dir: Path | str, launcher: Path | str, root: Path | str = "/",
                       config_home: Path | str | None = None,
                       flatpak_browsers: Iterable[str] = ()) -> list[Registration]:
    """Where install will write, merged so a folder shared by browsers is written once."""
    check_os(os_name)
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

