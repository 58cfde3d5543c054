"""Doctor: every registration the browsers could read, checked as they would read it.

Each finding names its fix. The checks: the manifests (JSON, name, type, ids, the launcher
they point to), a launch of each launcher with hello, duplicate and stale manifests, the
registrations install recorded, and the browsers themselves (Snap, Flatpak, present but not
registered, running with a ``--user-data-dir`` that has no manifest).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Sequence

from ..identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID, chrome_origin, chrome_origin_id
from .browsers import (BROWSERS, CHROMIUM, HOST_NAME, LINUX, MANIFEST_NAME, SYSTEM, USER, WINDOWS,
                       flatpak_manifest_dir, launcher_path, manifest_dirs, profile_manifest, registry_keys, resolve)
from .contents import UTF8_BOM
from .detect import detect_browsers, running_profiles
from .files import is_executable
from .findings import ERROR, INFO, WARNING, Finding, install_cmd, rm_cmd
from .launch import HELLO_TIMEOUT_S, HostCheck, browser_argv, check_host, hello_by_hand
from .record import ids_with, load_record, record_path, registrations_in
from .registry import Registry, registry_for

_LAUNCHER_PYTHON = re.compile(r"""^(?:exec\s+)?(?:'([^']+)'|"([^"]+)"|([^\s'"]+))\s+-m\s+hybrid_engine\b""", re.M)


@dataclass
class _Candidate:
    manifest: Path
    family: str
    scope: str
    browsers: list[str]
    flatpak_app: str | None = None
    registry: str | None = None  # "HKCU\\key" on Windows
    profile: str | None = None  # the --user-data-dir folder it sits in

    @property
    def key(self) -> str:
        return str(self.manifest) + (self.registry or "")


def _candidates(os_name, home, config_home, root, reg_api) -> list[_Candidate]:
    found: dict[str, _Candidate] = {}

    def add(path: Path, family: str, scope: str, browser: str, flatpak_app=None, registry=None) -> None:
        cand = _Candidate(path, family, scope, [browser], flatpak_app, registry)
        known = found.setdefault(cand.key, cand)
        if browser not in known.browsers:
            known.browsers.append(browser)

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
    reinstall = install_cmd(c.browsers, c.scope, c.profile)

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
    if raw.startswith(UTF8_BOM):
        add("manifest_bom", ERROR, "the manifest starts with a UTF-8 byte-order mark, which browsers reject "
            "as invalid JSON", f"run: {reinstall} (rewrites it without the mark), or remove the first 3 bytes: "
            f"sed -i '1s/^\\xEF\\xBB\\xBF//' {shlex.quote(path)}")
        raw = raw[len(UTF8_BOM):]
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
            ext_id = chrome_origin_id(origin) if isinstance(origin, str) else None
            if ext_id and origin.endswith("/"):
                good.add(ext_id)
            elif ext_id:
                slashless.add(ext_id)
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
                    f"run: {install_cmd(c.browsers, c.scope)} --extension-id {extra}")
    else:
        allowed = data.get("allowed_extensions")
        if not isinstance(allowed, list) or FIREFOX_EXTENSION_ID not in allowed:
            add("gecko_id_missing", ERROR, f"allowed_extensions does not include the add-on id "
                f"{FIREFOX_EXTENSION_ID}: Firefox says 'This extension does not have permission to use native "
                f"application {HOST_NAME}'", f'add "{FIREFOX_EXTENSION_ID}" to allowed_extensions, or run: {reinstall}')
        for extra in gecko_ids:
            if isinstance(allowed, list) and extra not in allowed:
                add("extension_id_missing", WARNING, f"allowed_extensions does not include {extra}",
                    f"run: {install_cmd(c.browsers, c.scope)} --extension-id {extra}")


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
    if not is_executable(launcher) and os_name != WINDOWS:
        add("launcher_not_executable", ERROR, f"the launcher {target} is not executable",
            f"chmod 755 {shlex.quote(target)}", where=target)
        return
    try:
        text = launcher.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if c.flatpak_app:
        m = re.search(r"--host\s+'?([^'\s]+)'?", text)
        if m and not Path(m.group(1)).exists():
            add("launcher_missing", ERROR, f"the Flatpak wrapper {target} runs {m.group(1)}, which does not exist",
                f"run: {install_cmd(c.browsers)}", where=m.group(1))
        return
    m = _LAUNCHER_PYTHON.search(text[:4096])
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
    os_name, home_path, config_home, data, root_path = resolve(os_name, home, data_dir, root)
    record = load_record(data)
    chrome_ids, gecko_ids = ids_with(record, extension_ids)
    recorded = registrations_in(record)
    recorded_paths = {os.path.normcase(r.manifest) for r in recorded}
    current_launcher = str(launcher_path(data, os_name))
    reg_api = registry_for(os_name, registry, writing=False)
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
                f"run: {install_cmd([p.browser], USER, p.user_data_dir)}"))
    parsed: dict[str, dict] = {}
    for c in candidates:
        data_ = _check_manifest(c, os_name, chrome_ids, gecko_ids, findings)
        if data_ is not None:
            parsed[c.key] = data_

    # launching: once per launcher, only where the static checks found nothing wrong with it
    broken_paths = {f.path for f in findings}
    launched: dict[str, HostCheck] = {}
    if check_launch:
        for c in candidates:
            data_ = parsed.get(c.key)
            target = data_.get("path") if data_ else None
            if not isinstance(target, str) or c.flatpak_app or target in broken_paths or str(c.manifest) in broken_paths:
                continue
            if c.profile and os.path.normcase(str(c.manifest)) not in recorded_paths:
                continue  # found through a running browser, written by someone else: read, never launched
            if target not in launched:
                launched[target] = check_host(target, browser_argv(c.family, str(c.manifest)), timeout)
                result = launched[target]
                if not result.ok:
                    findings.append(Finding(
                        "host_no_answer", ERROR, ",".join(c.browsers), target,
                        f"launching the host and sending hello failed: {result.problem}",
                        f"run it by hand to see its error: {hello_by_hand(target)}; if the interpreter or "
                        f"package moved, run: {install_cmd(c.browsers, c.scope)}"))

    # duplicates: a browser reading manifests in both scopes that point to different launchers
    duplicates: set[str] = set()
    for key in BROWSERS:
        user = [c for c in candidates if key in c.browsers and c.scope == USER and not c.flatpak_app
                and not c.profile]
        system = [c for c in candidates if key in c.browsers and c.scope == SYSTEM and not c.flatpak_app]
        for u in user:
            for s in system:
                pu = parsed.get(u.key, {}).get("path")
                ps = parsed.get(s.key, {}).get("path")
                if pu == ps:
                    continue
                u_ours = os.path.normcase(str(u.manifest)) in recorded_paths
                s_ours = os.path.normcase(str(s.manifest)) in recorded_paths
                if u_ours and not s_ours:
                    stale, fix = s, rm_cmd(str(s.manifest), SYSTEM)
                elif s_ours and not u_ours:
                    stale, fix = u, rm_cmd(str(u.manifest), USER)
                else:
                    stale, fix = s, (f"keep one: {rm_cmd(str(s.manifest), SYSTEM)}  (or "
                                     f"{rm_cmd(str(u.manifest), USER)}), then: {install_cmd([key])}")
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
        data_ = parsed.get(c.key)
        if not data_ or where in duplicates or c.flatpak_app or c.profile:
            continue
        if os.path.normcase(str(c.manifest)) in recorded_paths:
            continue
        target = data_.get("path")
        if isinstance(target, str) and os.path.normcase(target) != os.path.normcase(current_launcher):
            findings.append(Finding(
                "stale_manifest", WARNING, ",".join(c.browsers), where,
                f"a {HOST_NAME} manifest that this install did not write points to {target}, not to "
                f"{current_launcher}", f"remove it: {rm_cmd(str(c.manifest), c.scope)}; or take it over: "
                f"{install_cmd(c.browsers, c.scope)}"))

    # recorded registrations that are gone
    present = {os.path.normcase(str(c.manifest)) for c in candidates}
    for reg in recorded:
        if os.path.normcase(reg.manifest) not in present and not Path(reg.manifest).exists():
            findings.append(Finding("registration_missing", ERROR, ",".join(reg.browsers), reg.location,
                                    "install wrote this registration but it is gone",
                                    f"run: {install_cmd(reg.browsers, reg.scope, reg.user_data_dir)}"))
        elif reg.registry_key and reg_api is not None and not reg_api.get_default(reg.hive, reg.registry_key):
            findings.append(Finding("registration_missing", ERROR, ",".join(reg.browsers), reg.location,
                                    "the registry key install wrote is gone",
                                    f"run: {install_cmd(reg.browsers, reg.scope)}"))

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
                f"flathub {b.flatpak_id}; then {install_cmd([key])}), or use Firefox"))
        if p.snap and key == "firefox":
            findings.append(Finding(
                "snap_firefox", INFO, key, str(home_path / ".mozilla/native-messaging-hosts" / MANIFEST_NAME),
                "Firefox is a Snap: it starts native hosts through the xdg-desktop-portal WebExtensions portal "
                "(Ubuntu 22.04+), which reads ~/.mozilla/native-messaging-hosts and asks once for permission",
                "keep xdg-desktop-portal installed and accept the permission prompt; if Firefox says 'No such "
                f"native application', run: {install_cmd(['firefox'])}"))
        if p.flatpak and b.flatpak_id and os_name == LINUX:
            folder = flatpak_manifest_dir(key, home_path)
            if not (folder / MANIFEST_NAME).exists():
                findings.append(Finding(
                    "flatpak_not_registered", WARNING, key, str(folder / MANIFEST_NAME),
                    f"{b.label} runs as a Flatpak ({b.flatpak_id}) and only sees ~/.var/app/{b.flatpak_id}: "
                    "manifests outside it are invisible to it",
                    f"run: {install_cmd([key])} (writes the manifest and a flatpak-spawn wrapper inside the "
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
                f"{b.label} looks installed but has no {HOST_NAME} manifest", f"run: {install_cmd([key])}"))
    if not candidates and not recorded:
        findings.append(Finding("not_installed", ERROR, "", str(record_path(data)),
                                "the native host is not registered with any browser",
                                f"run: {install_cmd()}  (or name browsers: --browser chrome --browser firefox)"))
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return findings
