"""Install and uninstall: write the launcher and the registrations, record them, remove exactly those.

Per-location failures become findings in the report, not exceptions: one unwritable folder
must not keep the other browsers from being registered.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import BadRequest
from .browsers import BROWSERS, HOST_NAME, LINUX, SYSTEM, USER, WINDOWS, browser_key, launcher_path, resolve
from .contents import UTF8_BOM, build_manifest, flatpak_wrapper_script, launcher_script
from .detect import detect_browsers
from .files import is_executable, write_text
from .findings import ERROR, Finding, install_cmd, rm_cmd
from .plan import plan_profile_registrations, plan_registrations
from .record import Registration, ids_with, load_record, record_path, registrations_in, save_record
from .registry import MemoryRegistry, Registry, registry_for


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
    os_name, home_path, config_home, data, root_path = resolve(os_name, home, data_dir, root)
    scope = SYSTEM if system else USER
    user_data_dirs = list(user_data_dirs)
    if user_data_dirs and system:
        raise BadRequest("--user-data-dir names your own browser profile folder; it does not go with --system",
                         field="user_data_dir")
    chosen_explicitly = browsers is not None
    wanted = [browser_key(b) for b in browsers] if browsers is not None else None
    record = load_record(data)
    chrome_ids, gecko_ids = ids_with(record, extension_ids)
    python = os.path.abspath(python or sys.executable)  # never resolve symlinks: a venv's python is one
    launcher = launcher_path(data, os_name)
    reg_api = registry_for(os_name, registry) if not dry_run else (registry or MemoryRegistry())
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
        write_text(launcher, launcher_script(python, os_name, home_override), mode=0o755)
        if not is_executable(launcher) and os_name != WINDOWS:
            raise OSError(f"{launcher} is not executable after writing it")
    except OSError as exc:
        report.errors.append(Finding("launcher_write_failed", ERROR, "", str(launcher), str(exc),
                                     f"make {launcher.parent} writable, then run: {install_cmd()}"))
        return report

    for reg in regs:
        try:
            _write_registration(reg, os_name, chrome_ids, gecko_ids, launcher, reg_api)
            report.registrations.append(reg)
        except (OSError, ValueError) as exc:
            fix = (f"run: {install_cmd(reg.browsers, SYSTEM)}" if scope == SYSTEM
                   else f"make {Path(reg.manifest).parent} writable by you, then run: {install_cmd(reg.browsers)}")
            report.errors.append(Finding("write_failed", ERROR, ",".join(reg.browsers), reg.location,
                                         f"could not write or verify the registration: {exc}", fix))

    written = {n.ident for n in report.registrations}
    kept = [r for r in registrations_in(record) if r.ident not in written]
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
                                     f"make {data} writable, then run: {install_cmd()}"))
    return report


def _write_registration(reg: Registration, os_name: str, chrome_ids, gecko_ids, launcher: Path,
                        reg_api: Registry | None) -> None:
    if reg.flatpak_app:
        write_text(Path(reg.launcher), flatpak_wrapper_script(launcher, reg.flatpak_app), mode=0o755)
    manifest = build_manifest(reg.family, reg.launcher, chrome_ids, gecko_ids)
    path = Path(reg.manifest)
    write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    raw = path.read_bytes()  # verify: what the browser will read
    if raw.startswith(UTF8_BOM) or json.loads(raw.decode("utf-8")) != manifest:
        raise ValueError(f"{path} does not read back as the manifest that was written")
    if os_name == WINDOWS and reg.registry_key and reg_api is not None:
        reg_api.set_default(reg.hive, reg.registry_key, str(path))
        if reg_api.get_default(reg.hive, reg.registry_key) != str(path):
            raise ValueError(f"{reg.hive}\\{reg.registry_key} does not read back as {path}")


def _is_our_manifest(path: Path) -> bool:
    try:
        raw = path.read_bytes()
        data = json.loads(raw[len(UTF8_BOM):] if raw.startswith(UTF8_BOM) else raw)
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
    os_name, _home, _config_home, data, _root = resolve(os_name, home, data_dir, None)
    wanted = {browser_key(b) for b in browsers} if browsers is not None else None
    record = load_record(data)
    regs = registrations_in(record)
    reg_api = registry_for(os_name, registry) if (not dry_run and any(r.registry_key for r in regs)) else registry
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
            fix = ("sudo hybrid-engine uninstall --system" if reg.scope == SYSTEM
                   else f"{rm_cmd(reg.manifest, reg.scope)}")
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

