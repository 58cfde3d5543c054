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

Where each part lives (each module imports only ones above it):
- browsers.py  the browsers, the OS/scope path tables and where each reads the manifest
- detect.py    which browsers are installed, and which run with their own --user-data-dir
- registry.py  the Windows registry (and an in-memory one for tests and dry runs)
- contents.py  the manifest, launcher and Flatpak wrapper texts; the extension ids they allow
- files.py     atomic writes
- record.py    installed.json: what install wrote, and the extra ids it allows
- plan.py      where install will write
- findings.py  a problem with its fix command
- register.py  install and uninstall
- launch.py    starting the host with hello (doctor's launch check)
- diagnose.py  doctor
"""

from __future__ import annotations

from ..identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID, chrome_origin, is_chrome_extension_id
from .browsers import (ALIASES, BROWSERS, CHROMIUM, FIREFOX, HOST_NAME, LAUNCHER_NAME, LINUX, MACOS, MANIFEST_NAME,
                       OSES, SYSTEM, USER, WINDOWS, Browser, browser_key, current_os, flatpak_manifest_dir,
                       flatpak_wrapper_path, launcher_path, manifest_dirs, profile_manifest, registry_keys,
                       windows_manifest_path)
from .contents import DESCRIPTION, build_manifest, flatpak_wrapper_script, launcher_script, split_extension_ids
from .detect import Presence, RunningProfile, detect_browsers, running_profiles
from .diagnose import doctor
from .findings import ERROR, INFO, WARNING, Finding
from .launch import HELLO, HELLO_TIMEOUT_S, HostCheck, check_host
from .plan import plan_profile_registrations, plan_registrations
from .record import (RECORD_NAME, Registration, load_record, record_path, recorded_registrations,
                     registered_extension_ids, registered_gecko_ids, save_record)
from .register import InstallReport, UninstallReport, install, uninstall
from .registry import MemoryRegistry, Registry, WindowsRegistry

__all__ = [
    "HOST_NAME", "MANIFEST_NAME", "LAUNCHER_NAME", "BROWSERS", "LINUX", "MACOS", "WINDOWS", "USER", "SYSTEM",
    "Browser", "Registration", "Presence", "Finding", "InstallReport", "UninstallReport", "HostCheck",
    "MemoryRegistry", "WindowsRegistry",
    "current_os", "browser_key", "manifest_dirs", "registry_keys", "flatpak_manifest_dir", "launcher_path",
    "windows_manifest_path", "record_path", "split_extension_ids", "build_manifest", "launcher_script",
    "plan_registrations", "detect_browsers", "load_record", "registered_extension_ids", "registered_gecko_ids",
    "install", "uninstall", "doctor", "check_host", "profile_manifest", "running_profiles", "RunningProfile",
]
