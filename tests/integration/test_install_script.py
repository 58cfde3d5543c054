"""install/install.sh as a newcomer runs it: fresh HOME, a venv in the data folder, a registered host."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="install.sh is for Linux and macOS; install.ps1 is Windows'")
def test_install_script_creates_a_venv_registers_the_host_and_it_answers(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HYBRID_ENGINE", "XDG_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["HOME"] = str(home)
    proc = subprocess.run(["sh", str(ROOT / "install" / "install.sh"), "--browser", "chromium"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    venv = home / ".local" / "share" / "hybrid-engine" / "venv"
    assert (venv / "bin" / "hybrid-engine").exists()
    manifest_path = home / ".config" / "chromium" / "NativeMessagingHosts" / "hybrid_engine.json"
    manifest = json.loads(manifest_path.read_text())
    launcher = Path(manifest["path"])
    assert launcher.is_absolute() and os.access(launcher, os.X_OK)
    assert all(o.startswith("chrome-extension://") and o.endswith("/") for o in manifest["allowed_origins"])
    assert "Load unpacked" in proc.stdout
    # The browser starts the launcher with a minimal environment: no PATH to lean on.
    from hybrid_engine.install import check_host

    result = check_host(launcher, timeout=60)  # room on a busy machine
    assert result.ok, result
    shutil.rmtree(home, ignore_errors=True)
