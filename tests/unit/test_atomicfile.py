"""Rewriting a file in place: a reader sees the old bytes or the new ones, never a mix."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from hybrid_engine.atomicfile import write_atomically


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_is_readable_by_its_owner_alone(tmp_path):
    target = tmp_path / "config.toml"
    write_atomically(target, "a = 1\n")
    assert target.read_text() == "a = 1\n"
    assert _mode(target) == 0o600


def test_rewriting_keeps_the_permissions_the_user_gave_the_file(tmp_path):
    target = tmp_path / "config.toml"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_atomically(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o640


def test_text_is_written_byte_for_byte_without_newline_translation(tmp_path):
    target = tmp_path / "manifest.json"
    write_atomically(target, "{\r\n\"é\": 1}\n", 0o644)
    assert target.read_bytes() == "{\r\n\"é\": 1}\n".encode("utf-8")
    assert _mode(target) == 0o644


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "keys.json"
    target.write_text("old")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    target = tmp_path / "keys.json"
    bodies = [str(n) * 100_000 for n in range(8)]
    start = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def writer(body):
        start.wait()
        try:
            for _ in range(5):
                write_atomically(target, body)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in bodies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]
