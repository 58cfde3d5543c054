"""Fixtures shared by every layer: a private HYBRID_ENGINE_HOME, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from integration.polling import GUARD_S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def he_home(tmp_path, monkeypatch) -> Path:
    """A fresh data folder; no provider keys or base URLs leak in from the environment."""
    home = tmp_path / "he-home"
    monkeypatch.setenv("HYBRID_ENGINE_HOME", str(home))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL", "GEMINI_API_KEY",
                "GOOGLE_API_KEY", "GEMINI_BASE_URL", "HYBRID_ENGINE_LOCAL_BASE_URL", "HYBRID_ENGINE_LOCAL_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield home
    _stop_background_worker(home)


def _stop_background_worker(home: Path) -> None:
    """A background worker a test's host started outlives the test while it has work (a retry
    waiting out its backoff): stopped here, so it can never answer the next test's scripted
    provider replies in its place."""
    import signal
    import time

    from hybrid_engine.worker import LOCK_NAME, WorkerLock

    path = home / LOCK_NAME
    if path.is_symlink() or not path.is_file():  # a test that planted something else there
        return
    lock = WorkerLock(path)
    pid = lock.holder()
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60  # a guard: SIGTERM hands running steps back at once
    while lock.holder() == pid and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def write_config(he_home):
    def write(text: str) -> Path:
        he_home.mkdir(parents=True, exist_ok=True)
        path = he_home / "config.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path
    return write


@pytest.fixture
def write_template(tmp_path):
    def write(data: dict | str, name: str = "wf.yaml") -> Path:
        path = tmp_path / name
        if isinstance(data, str):
            path.write_text(textwrap.dedent(data), encoding="utf-8")
        else:
            path.write_text(json.dumps(data) if name.endswith(".json") else _yaml(data), encoding="utf-8")
        return path
    return write


def _yaml(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


class CLI:
    def __init__(self, env: dict):
        self.env = env

    def __call__(self, *args, input: str | None = None, timeout: float = GUARD_S, check: bool = False):
        # A guard against a hang, never a bound on speed: at least GUARD_S whatever a test asks.
        proc = subprocess.run([sys.executable, "-m", "hybrid_engine", *map(str, args)], input=input,
                              capture_output=True, text=True, env=self.env, timeout=max(timeout, GUARD_S))
        if check and proc.returncode != 0:
            raise AssertionError(f"hybrid-engine {' '.join(map(str, args))} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def json(self, *args, **kw):
        proc = self(*args, check=True, **kw)
        return json.loads(proc.stdout)

    def popen(self, *args, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hybrid_engine", *map(str, args)], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def cli(he_home) -> CLI:
    env = dict(os.environ)
    env["HYBRID_ENGINE_HOME"] = str(he_home)
    env["PYTHONPATH"] = str(ROOT / "host") + os.pathsep + env.get("PYTHONPATH", "")
    return CLI(env)


@pytest.fixture
def service(he_home):
    from hybrid_engine.service import Service

    svc = Service()
    yield svc
    svc.store.close()
