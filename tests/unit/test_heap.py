"""The C heap of a process that executes steps: two malloc arenas, not eight per core."""

from __future__ import annotations

import platform

from hybrid_engine import heap


def test_a_process_that_executes_steps_caps_its_malloc_arenas_on_glibc(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(heap, "_done", None)
    assert heap.limit_arenas() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_an_arena_limit_the_environment_sets_is_left_as_it_is(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setattr(heap, "_done", None)
    assert heap.limit_arenas() is False
