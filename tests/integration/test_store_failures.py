"""engine.db damaged, emptied, read-only or on a full disk: one line naming the file and the
way out, exit 2, for every command; the host answers with its own error code and keeps serving.

The read-only folder and the full disk are real: the command runs in its own mount namespace
(`unshare -m`, or `unshare -rm` for a user who is not root) where the data folder is bound
read-only, or is a small tmpfs filled to the last block. chmod would not do: the tests run as
root here, and root writes through file modes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_client import HostClient, host_env

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-page.html"

READ_ONLY = 'mount --bind -o ro "$HYBRID_ENGINE_HOME" "$HYBRID_ENGINE_HOME" && exec "$@"'
# A 1 MiB tmpfs over the data folder, the prepared folder copied in, then filled to the last block.
FULL_DISK = ('mount -t tmpfs -o size=1m tmpfs "$HYBRID_ENGINE_HOME" && cp -a "$HE_SOURCE/." "$HYBRID_ENGINE_HOME/"'
             ' && { dd if=/dev/zero of="$HYBRID_ENGINE_HOME/fill" bs=4k 2>/dev/null; true; }'
             ' && exec "$@"')
# The same, but 256 KiB are left free: enough to open and read, not to store a 2 MB page.
NEARLY_FULL = ('mount -t tmpfs -o size=1m tmpfs "$HYBRID_ENGINE_HOME" && cp -a "$HE_SOURCE/." "$HYBRID_ENGINE_HOME/"'
               ' && dd if=/dev/zero of="$HYBRID_ENGINE_HOME/reserve" bs=4k count=64 2>/dev/null'
               ' && { dd if=/dev/zero of="$HYBRID_ENGINE_HOME/fill" bs=4k 2>/dev/null; true; }'
               ' && rm "$HYBRID_ENGINE_HOME/reserve" && exec "$@"')


def namespaced(script: str) -> list[str]:
    """A command prefix that runs the rest in a private mount namespace after `script`'s mounts."""
    return ["unshare", "-m" if os.geteuid() == 0 else "-rm", "sh", "-c", script, "sh"]


def he(env: dict, *args, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "hybrid_engine", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(he_home):
    return host_env(he_home)


@pytest.fixture
def run_id(env, he_home) -> str:
    """A data folder with one run in it, its database closed."""
    proc = he(env, "run", "page-text", "--input", SAMPLE)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybrid-engine: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_every_command_refuses(env, run_id: str, *needles: str, prefix: list[str] = ()) -> None:
    for args in (["runs"], ["show", run_id], ["run", "page-text"]):
        assert_one_line(he(env, *args, prefix=prefix), *needles)


def host_reply(env, he_home, prefix: list[str] = ()) -> list[dict]:
    """runs.list, then capture: both errors; then hello still answers (the host keeps serving)."""
    host = HostClient(he_home, env=env, prefix=prefix)
    try:
        errors = [host.error("runs.list"),
                  host.error("capture", template="page-text", page={"content": "<p>hi</p>"})]
        assert host.call("hello", protocol=1)["version"]
        assert host.call("templates.list")["templates"]  # what does not need the database still works
        assert host.stdout_problems == []
    finally:
        host.close()
    return errors


# ---- damaged files ---------------------------------------------------------------------------------

def test_a_file_that_is_not_a_database_is_named_with_the_command_to_move_it_aside(env, he_home, run_id):
    db = he_home / "engine.db"
    db.write_bytes(b"these are not the bytes of a database " * 200)
    assert_every_command_refuses(env, run_id, str(db), "is damaged", f"mv {db} {db}.broken")
    assert [e["code"] for e in host_reply(env, he_home)] == ["store_corrupt", "store_corrupt"]


def test_a_truncated_database_is_reported_as_damaged_by_every_command_and_the_host(env, he_home, run_id):
    db = he_home / "engine.db"
    os.truncate(db, 3 * 4096)  # the header and schema survive; the tables' pages are gone
    assert_every_command_refuses(env, run_id, str(db), "is damaged", f"mv {db} {db}.broken")
    errors = host_reply(env, he_home)
    assert [e["code"] for e in errors] == ["store_corrupt", "store_corrupt"]
    assert str(db) in errors[0]["message"]


def test_an_empty_database_file_is_refused_not_silently_made_a_new_database(env, he_home, run_id):
    db = he_home / "engine.db"
    os.truncate(db, 0)
    assert_every_command_refuses(env, run_id, str(db), "empty file (0 bytes)", f"mv {db} {db}.empty")
    assert db.stat().st_size == 0  # left exactly as it was
    assert [e["code"] for e in host_reply(env, he_home)] == ["store_corrupt", "store_corrupt"]
    assert db.stat().st_size == 0


def test_a_folder_where_the_database_belongs_is_named_with_the_fix(env, he_home):
    he_home.mkdir(parents=True)
    (he_home / "engine.db").mkdir()
    db = he_home / "engine.db"
    assert_one_line(he(env, "runs"), f"{db} is not a file", f"mv {db} {db}.moved")
    assert [e["code"] for e in host_reply(env, he_home)] == ["store_unavailable", "store_unavailable"]


def test_processes_opening_a_new_data_folder_at_once_share_one_database_none_refuses_it(env, he_home):
    procs = [subprocess.Popen([sys.executable, "-m", "hybrid_engine", "runs"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(code == 0 and "no runs yet" in out for code, out, _ in results), results
    assert (he_home / "engine.db").is_file()
    assert [p.name for p in he_home.iterdir() if p.name.startswith(".engine.db")] == []  # no temporary left


def test_a_new_data_folder_still_gets_a_fresh_database(env, he_home):
    proc = he(env, "runs")
    assert proc.returncode == 0 and "no runs yet" in proc.stdout, proc.stderr
    assert (he_home / "engine.db").stat().st_size > 0
    assert [p.name for p in he_home.iterdir() if p.name.startswith(".engine.db")] == []


# ---- read-only folder and full disk (real mounts in a private namespace) ----------------------------

def test_a_read_only_data_folder_says_so_and_how_to_fix_it(env, he_home, run_id):
    prefix = namespaced(READ_ONLY)
    assert_every_command_refuses(env, run_id, str(he_home / "engine.db"), "read-only", "HYBRID_ENGINE_HOME",
                                 prefix=prefix)
    errors = host_reply(env, he_home, prefix)
    assert [e["code"] for e in errors] == ["store_read_only", "store_read_only"]


def test_a_full_disk_says_so_for_every_command_and_the_host(env, he_home, run_id, tmp_path):
    source = tmp_path / "prepared"
    shutil.copytree(he_home, source)
    env = {**env, "HE_SOURCE": str(source)}
    prefix = namespaced(FULL_DISK)
    assert_every_command_refuses(env, run_id, str(he_home / "engine.db"), "is full", "Free some space",
                                 prefix=prefix)
    errors = host_reply(env, he_home, prefix)
    assert [e["code"] for e in errors] == ["store_full", "store_full"]


def test_a_page_too_big_for_the_space_left_is_refused_as_disk_full(env, he_home, run_id, tmp_path):
    source = tmp_path / "prepared"
    shutil.copytree(he_home, source)
    page = tmp_path / "big.html"
    page.write_text("<p>" + "word " * 400_000 + "</p>", encoding="utf-8")  # 2 MB
    env = {**env, "HE_SOURCE": str(source)}
    prefix = namespaced(NEARLY_FULL)
    assert he(env, "runs", prefix=prefix).returncode == 0  # reading still works
    line = assert_one_line(he(env, "run", "page-text", "--input", page, prefix=prefix), "is full")
    assert "database or disk is full" in line
