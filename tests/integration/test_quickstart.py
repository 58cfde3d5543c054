"""The README quick start, run as written in a fresh copy of the checkout with a fresh HOME."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from test_readme import quickstart_blocks  # noqa: E402


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


@pytest.mark.slow
def test_quick_start_works_as_written_on_a_fresh_machine(tmp_path):
    checkout = tmp_path / "checkout"
    home = tmp_path / "home"
    home.mkdir()
    _copy_checkout(checkout)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HYBRID_ENGINE", "XDG_", "OPENAI", "DEEPSEEK", "GEMINI", "GOOGLE_API", "VIRTUAL_ENV",
                                "PYTHONPATH"))}
    env["HOME"] = str(home)
    command = quickstart_blocks()[0]
    proc = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=900)
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 1, f"expected a FAILED run (no provider) -> exit 1\n{out}\n{err}"
    assert re.search(r"\[#+\.*\] \d/3 steps", err), err  # progress was shown
    table = out.split("\n\n")[0]
    for header in ("step", "tokens", "cost"):
        assert header in table.splitlines()[1]
    assert re.search(r"^page\s+capture\s+COMPLETED", table, re.M)
    assert re.search(r"^text\s+extract_text\s+COMPLETED", table, re.M)
    assert re.search(r"^summary\s+openai_chat\s+FAILED\s.*~\$0\.\d+", table, re.M), table
    assert "OPENAI_API_KEY" in out and "hybrid-engine keys set openai" in out
    data = home / ".local" / "share" / "hybrid-engine" / "engine.db"
    assert data.exists() and (data.stat().st_mode & 0o777) == 0o600
