"""Starting the HTTP API on login: a systemd user unit on Linux, a launchd agent on macOS.

`serve --install` writes the file and then asks the service manager to enable it; a
machine without one (a container, no user bus) keeps the file and is told the command to
run. `serve --uninstall` undoes both. Paths follow XDG_CONFIG_HOME and HOME, so tests (and
people with a moved config folder) get theirs. doctor checks what was written.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import BadRequest
from ..atomicfile import write_atomically

UNIT_NAME = "hybrid-engine-serve.service"
AGENT_LABEL = "org.hybrid-engine.serve"
MANAGER_TIMEOUT_S = 20.0


def current_os() -> str:
    return {"linux": "linux", "darwin": "macos"}.get(sys.platform, sys.platform)


def unit_path(os_name: str | None = None) -> Path:
    os_name = os_name or current_os()
    home = Path(os.environ.get("HOME") or Path.home())
    if os_name == "macos":
        return home / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
    if os_name == "linux":
        base = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        return Path(base) / "systemd" / "user" / UNIT_NAME
    raise BadRequest(f"serve --install: starting on login is made for Linux (systemd) and macOS (launchd), "
                     f"not {os_name}; start `hybrid-engine serve` from your own login items")


def command(port: int) -> list[str]:
    return [sys.executable, "-m", "hybrid_engine", "serve", "--port", str(port)]


def environment() -> dict[str, str]:
    """What the server must see that a login session may not set: the data folder, when moved."""
    home = os.environ.get("HYBRID_ENGINE_HOME")
    return {"HYBRID_ENGINE_HOME": home} if home else {}


def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in ' \t"\'\\;$'):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(port: int) -> str:
    env = "".join(f"Environment={_systemd_quote(f'{k}={v}')}\n" for k, v in environment().items())
    return ("[Unit]\n"
            f"Description=Hybrid Engine HTTP API on 127.0.0.1:{port}\n\n"
            "[Service]\n"
            f"ExecStart={' '.join(_systemd_quote(a) for a in command(port))}\n"
            f"{env}"
            "Restart=on-failure\n"
            "RestartSec=5\n\n"
            "[Install]\n"
            "WantedBy=default.target\n")


def launchd_plist(port: int) -> bytes:
    data = {"Label": AGENT_LABEL, "ProgramArguments": command(port), "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False}}
    if environment():
        data["EnvironmentVariables"] = environment()
    return plistlib.dumps(data)


def install(port: int | None, os_name: str | None = None) -> list[str]:
    """Write the unit (or agent) and try to enable it; lines saying what happened."""
    from .server import DEFAULT_PORT

    os_name = os_name or current_os()
    port = port or DEFAULT_PORT
    path = unit_path(os_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    again = path.exists()
    content = launchd_plist(port) if os_name == "macos" else systemd_unit(port).encode("utf-8")
    write_atomically(path, content, 0o644)
    lines = [f"wrote {path} (the API on 127.0.0.1:{port} at login)"]
    # Installing again (another port, a moved interpreter) must replace the server already
    # running: launchctl refuses to bootstrap a loaded label, and `enable --now` leaves a
    # running unit as it is.
    if os_name == "macos":
        if again:
            _manage(["launchctl", "bootout", f"gui/{os.getuid()}", str(path)], None)  # not loaded: fine
        lines += _manage(["launchctl", "bootstrap", f"gui/{os.getuid()}", str(path)],
                         f"launchctl bootstrap gui/$(id -u) {path}")
    else:
        lines += _manage(["systemctl", "--user", "daemon-reload"], None, quiet=True)
        enabled = _manage(["systemctl", "--user", "enable", "--now", UNIT_NAME],
                          f"systemctl --user enable --now {UNIT_NAME}")
        lines += enabled
        if again and enabled[-1:] == [f"ran `systemctl --user enable --now {UNIT_NAME}`"]:
            lines += _manage(["systemctl", "--user", "restart", UNIT_NAME], f"systemctl --user restart {UNIT_NAME}")
    return lines


def uninstall(os_name: str | None = None) -> list[str]:
    os_name = os_name or current_os()
    path = unit_path(os_name)
    if not path.exists():
        return [f"nothing to remove: {path} does not exist"]
    lines = []
    if os_name == "macos":
        lines += _manage(["launchctl", "bootout", f"gui/{os.getuid()}", str(path)], None)
    else:
        lines += _manage(["systemctl", "--user", "disable", "--now", UNIT_NAME], None)
    path.unlink()
    lines.append(f"removed {path}")
    if os_name != "macos":
        lines += _manage(["systemctl", "--user", "daemon-reload"], None, quiet=True)
    return lines


def _manage(argv: list[str], by_hand: str | None, quiet: bool = False) -> list[str]:
    """Run the service manager when there is one; never fails the command (a container has no
    user bus): says what happened and what to run by hand."""
    exe = shutil.which(argv[0])
    later = f"; to start it now, run: {by_hand}" if by_hand else ""
    if exe is None:
        return [] if quiet else [f"{argv[0]} not found: nothing enabled{later}"]
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=MANAGER_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"`{' '.join(argv)}` could not run ({exc}){later}"]
    if proc.returncode != 0:
        said = " ".join((proc.stderr or proc.stdout).split())[:300]
        return [f"`{' '.join(argv)}` failed ({said or f'exit {proc.returncode}'}){later}"]
    return [] if quiet else [f"ran `{' '.join(argv)}`"]


# ---- doctor -------------------------------------------------------------------------

def findings(os_name: str | None = None) -> list:
    """What doctor says about the HTTP API: a login item whose interpreter is gone, a token
    others can read, an installed server that does not answer."""
    from ..install.findings import ERROR, WARNING, Finding
    from . import token

    out = []
    mode = token.loose_mode()
    if mode is not None:
        out.append(Finding("http_token_readable", WARNING, "", str(token.path()),
                           f"the HTTP API token can be read by other users (mode {mode:o})",
                           f"chmod 600 {token.path()}"))
    os_name = os_name or current_os()
    try:
        path = unit_path(os_name)
    except BadRequest:
        return out
    if not path.exists():
        return out
    argv, port = _installed_command(path, os_name)
    if not argv or not Path(argv[0]).exists():
        out.append(Finding("serve_unit_broken", ERROR, "", str(path),
                           f"the login item starts {argv[0] if argv else 'nothing'}, which does not exist "
                           "(the interpreter or package moved)", "run: hybrid-engine serve --install"))
    elif port and not _answers(port):
        start = (f"launchctl kickstart gui/$(id -u)/{AGENT_LABEL}" if os_name == "macos"
                 else f"systemctl --user enable --now {UNIT_NAME}")
        out.append(Finding("serve_not_running", WARNING, "", str(path),
                           f"the HTTP API is installed to start on login but nothing answers on 127.0.0.1:{port}",
                           f"run: {start} (or `hybrid-engine serve --port {port}` to see its error)"))
    return out


def _installed_command(path: Path, os_name: str) -> tuple[list[str], int | None]:
    import shlex

    try:
        if os_name == "macos":
            argv = list(plistlib.loads(path.read_bytes()).get("ProgramArguments") or [])
        else:
            line = next((ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("ExecStart=")), "")
            argv = shlex.split(line[len("ExecStart="):].replace("%%", "%"))
    except (OSError, ValueError, plistlib.InvalidFileException):
        return [], None
    port = None
    if "--port" in argv[:-1]:
        try:
            port = int(argv[argv.index("--port") + 1])
        except ValueError:
            port = None
    return argv, port


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
