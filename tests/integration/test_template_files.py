"""Bad template files beside good ones: the host and the CLI list the good ones, name
each bad file with its problem, and keep running the good ones.

The bad files are the ones that could take everything down: nesting past Python's
recursion limit in YAML and in JSON, and a YAML alias bomb.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from host_client import HostClient

PAGE = ("<!doctype html><html><head><title>Tidal pools</title></head><body><article><h1>Tidal pools</h1>"
        "<p>Tidal pools are rocky pools on the sea shore, cut off from the sea at low tide.</p>"
        "</article></body></html>")
BAD = ("deep.json", "deep.yaml", "lol.yaml")


def _alias_bomb() -> str:
    levels = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        levels.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "name: lol\nsteps:\n  - id: a\n    action: noop\n    params:\n      value:\n" + "".join(
        f"        - {level}\n" for level in levels)


@pytest.fixture
def home(he_home) -> Path:
    from hybrid_engine.templates import seed_templates

    folder = he_home / "templates"
    seed_templates(folder)
    (folder / "deep.json").write_text('{"name": "deep-json", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (folder / "deep.yaml").write_text("name: deep-yaml\nsteps: " + "[" * 500 + "]" * 500 + "\n")
    (folder / "lol.yaml").write_text(_alias_bomb())
    return he_home


def test_host_lists_the_good_templates_and_names_each_bad_file(home):
    with HostClient(home) as host:
        host.call("hello", protocol=1)
        result = host.call("templates.list")
        assert {"page-text", "page-digest", "compare-models"} <= {t["name"] for t in result["templates"]}
        errors = result["errors"]
        assert sorted(name for name in BAD for e in errors if name in e) == sorted(BAD) and len(errors) == 3
        assert all("the limit for a template" in e for e in errors)
        assert host.stdout_problems == []


def test_host_captures_with_a_good_template_beside_bad_files(home):
    with HostClient(home) as host:
        host.call("hello", protocol=1)
        result = host.call("capture", template="page-text",
                           page={"content": PAGE, "source_url": "https://example.org/pools",
                                 "content_type": "text/html", "title": "Tidal pools", "selection": None})
        doc = host.wait_run(result["run_id"])
        assert [s["status"] for s in doc["steps"]] == ["COMPLETED"] * 3


def test_cli_lists_the_good_templates_and_names_each_bad_file(home, cli):
    proc = cli("templates", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "page-text" in proc.stdout
    for name in BAD:
        assert f"{name}: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_runs_a_good_template_beside_bad_files(home, cli, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    proc = cli("run", "page-text", "--input", page, "--wait", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "COMPLETED" in proc.stdout + proc.stderr
