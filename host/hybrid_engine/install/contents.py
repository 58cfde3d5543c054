"""What install writes: the host manifest, the launcher, the Flatpak wrapper; and the ids they allow.

The manifest's ``path`` is the launcher, which runs the absolute interpreter that has this
package: the browser starts it with a minimal environment, so nothing in it depends on PATH.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import BadRequest
from ..identity import (CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID, chrome_origin, chrome_origin_id,
                        is_chrome_extension_id, is_gecko_id)
from .browsers import CHROMIUM, HOST_NAME, WINDOWS, check_os


DESCRIPTION = "Hybrid Engine native-messaging host (local AI workflows)"
UTF8_BOM = b"\xef\xbb\xbf"  # browsers reject a manifest that starts with it
_FLATPAK_SPAWN = "/usr/bin/flatpak-spawn"


def split_extension_ids(ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """Sort user-given ids into Chrome ids and Firefox add-on ids; BadRequest on junk.

    Accepts a bare Chrome id, a ``chrome-extension://<id>/`` origin (slash optional),
    or a Gecko id (``name@domain`` or ``{uuid}``).
    """
    chrome: list[str] = []
    gecko: list[str] = []
    for raw in ids:
        value = (raw or "").strip()
        candidate = chrome_origin_id(value) or value
        if is_chrome_extension_id(candidate):
            if candidate not in chrome:
                chrome.append(candidate)
        elif is_gecko_id(value):
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
    check_os(os_name)
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

