"""A page's title (or any captured or model text) never chooses where write_file writes.

Every run goes through the real store and executor: a capture slot filled by `ingest`,
then a `save` step whose path is rendered from the page.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from hybrid_engine.models import ExternalDataRequest
from hybrid_engine.templates import validate

TITLE = "{{ steps.page.outputs.title }}"


def save_page(service, title: str | None, path: str = TITLE, *, append: bool = False, content: str | None = None) -> str:
    params = {"path": path, "content": "{{ steps.page.outputs.content }}"}
    if append:
        params["append"] = True
    tpl = validate({"name": "save-page", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "save", "action": "write_file", "dependencies": ["page"], "params": params},
    ]}, "save-page.yaml")
    run_id = service.create_run(tpl)
    service.ingest(run_id, ExternalDataRequest(content=content if content is not None else f"page {title!r}\n",
                                               title=title, content_type="text/plain"))
    return run_id


def drain(service) -> None:
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))


def saved(service, run_id: str) -> dict:
    return {s["id"]: s for s in service.run_document(run_id)["steps"]}["save"]


def files_dir(he_home: Path) -> Path:
    return he_home / "files"


def written_inside_files(he_home: Path, step: dict) -> Path:
    assert step["status"] == "COMPLETED", step["error"]
    path = Path(step["outputs"]["path"])
    assert path.resolve().parent == files_dir(he_home).resolve(), path
    return path


def test_title_with_tilde_stays_inside_files_folder(service, he_home, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the user's own\n")
    monkeypatch.setenv("HOME", str(home))
    run_id = save_page(service, "~/.bashrc")
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert path.name.startswith("bashrc-")
    assert (home / ".bashrc").read_text() == "# the user's own\n"


def test_title_with_dotdot_cannot_overwrite_engine_db(service, he_home):
    run_id = save_page(service, "../engine.db")
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert path.name.startswith("engine.db-")
    assert (he_home / "engine.db").read_bytes()[:16] == b"SQLite format 3\x00"
    with sqlite3.connect(he_home / "engine.db") as db:  # every run still there
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_title_climbing_out_of_a_template_subfolder_stays_inside_it(service, he_home, tmp_path):
    run_id = save_page(service, "../../../x", path="pages/" + TITLE + ".md")
    drain(service)
    step = saved(service, run_id)
    assert step["status"] == "COMPLETED", step["error"]
    path = Path(step["outputs"]["path"])
    assert path.resolve().parent == (files_dir(he_home) / "pages").resolve()
    assert path.name.startswith("x-") and path.suffix == ".md"
    assert not (tmp_path / "x.md").exists()


def test_title_with_an_absolute_path_stays_inside_files_folder(service, he_home, tmp_path):
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    run_id = save_page(service, str(victim))
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert path.name.rsplit("-", 1)[0].endswith("-passwd")
    assert victim.read_text() == "root:x:0:0\n"


def test_empty_title_is_saved_under_a_fallback_name(service, he_home):
    run_id = save_page(service, "")
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert path.name.startswith("untitled-")
    assert path.read_text() == "page ''\n"


def test_500_character_title_is_cut_to_a_name_the_file_system_takes(service, he_home):
    run_id = save_page(service, "Long " * 100, path=TITLE + ".md")
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert len(path.name.encode()) <= 120 and path.name.startswith("Long-Long-") and path.suffix == ".md"


def test_a_name_made_of_three_long_titles_is_cut_to_fit_one_file_name(service, he_home):
    run_id = save_page(service, "Long " * 100, path=f"{TITLE} {TITLE} {TITLE}.md")
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert len(path.name.encode()) <= 255 and path.name.startswith("Long-Long-") and path.suffix == ".md"


def test_unicode_title_keeps_its_letters_in_one_file_name(service, he_home):
    run_id = save_page(service, "Café — 東京 ☕/रिपोर्ट", path=TITLE + ".md")
    drain(service)
    path = written_inside_files(he_home, saved(service, run_id))
    assert path.name.startswith("Café-東京-रिपोर्ट-")
    assert path.read_text(encoding="utf-8").startswith("page 'Café")


def test_two_runs_with_the_same_title_write_two_files(service, he_home):
    first = save_page(service, "Daily news", content="first\n")
    second = save_page(service, "Daily news", content="second\n")
    drain(service)
    a = written_inside_files(he_home, saved(service, first))
    b = written_inside_files(he_home, saved(service, second))
    assert a != b
    assert (a.read_text(), b.read_text()) == ("first\n", "second\n")


def test_append_with_the_same_title_adds_to_one_file_inside_files_folder(service, he_home):
    for body in ("one\n", "two\n"):
        save_page(service, "../site log", append=True, content=body)
        drain(service)
    assert (files_dir(he_home) / "site-log").read_text() == "one\ntwo\n"


def test_symlinked_folder_inside_files_folder_is_not_followed(service, he_home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    files_dir(he_home).mkdir(parents=True)
    (files_dir(he_home) / "pages").symlink_to(outside, target_is_directory=True)
    run_id = save_page(service, "Title", path="pages/" + TITLE + ".md")
    drain(service)
    step = saved(service, run_id)
    assert step["status"] == "FAILED"
    assert "params.path" in step["error"] and "pages' is a symbolic link" in step["error"]
    assert list(outside.iterdir()) == []


def test_symlink_at_the_target_is_not_followed(service, he_home, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    files_dir(he_home).mkdir(parents=True)
    (files_dir(he_home) / "notes.md").symlink_to(victim)
    run_id = save_page(service, "Title", path="notes.md")
    drain(service)
    step = saved(service, run_id)
    assert step["status"] == "FAILED"
    assert "params.path" in step["error"] and "notes.md' is a symbolic link" in step["error"]
    assert victim.read_text() == "keep\n"


def test_hard_link_at_the_target_is_not_written_through(service, he_home, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    files_dir(he_home).mkdir(parents=True)
    os.link(victim, files_dir(he_home) / "notes.md")
    run_id = save_page(service, "Title", path="notes.md")
    drain(service)
    step = saved(service, run_id)
    assert step["status"] == "FAILED" and "hard links" in step["error"]
    assert victim.read_text() == "keep\n"


def test_fifo_at_the_target_fails_the_step_instead_of_freezing_the_worker(service, he_home):
    files_dir(he_home).mkdir(parents=True)
    fifo = files_dir(he_home) / "inbox"
    os.mkfifo(fifo)
    run_id = save_page(service, "inbox", append=True)  # append keeps the name: the FIFO is the target
    worker = threading.Thread(target=drain, args=(service,), daemon=True)
    worker.start()
    worker.join(60)  # a safety net only: the step must fail without waiting for anything
    if worker.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # unblock the writer so the test can end
        worker.join(10)
        pytest.fail("the worker froze opening a FIFO")
    step = saved(service, run_id)
    assert step["status"] == "FAILED"
    assert "params.path" in step["error"] and "regular files only" in step["error"]


def test_template_may_name_a_folder_in_the_home_folder_and_data_fills_the_name(service, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    run_id = save_page(service, "../../etc/x", path="~/notes/" + TITLE + ".md")
    drain(service)
    step = saved(service, run_id)
    assert step["status"] == "COMPLETED", step["error"]
    path = Path(step["outputs"]["path"])
    assert path.parent == home / "notes" and path.name.startswith("etc-x-")
