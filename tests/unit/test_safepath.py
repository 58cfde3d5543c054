"""Rendering a path param: data fills in names, only the template chooses folders."""

import os

import pytest

from hybrid_engine import dag, safepath
from hybrid_engine.adapters import SPECS
from hybrid_engine.safepath import MAX_PIECE_BYTES, name_piece

OUTPUTS = {"page": {"title": "../../etc/passwd", "n": 7}}
RUN = {"id": "r1", "name": "t", "template": "t", "created_at": "2026-11-30T09:00:00+00:00"}


def render_path(raw, outputs=OUTPUTS, seed="r1/save"):
    return dag.render_path(raw, dag.make_lookup(outputs, RUN), seed)


@pytest.mark.parametrize("title", ["~/.bashrc", "../engine.db", "../../../x", "/etc/passwd", "..", ".", "~",
                                   "a\\b", "C:\\Windows\\x", "\x00\n\r\t", "\u202egnp.exe", "-rf"])
def test_name_piece_is_one_plain_component(title):
    piece = name_piece(title)
    assert piece and "/" not in piece and "\\" not in piece and ":" not in piece
    assert not piece.startswith((".", "-", "~")) and piece.isprintable()


def test_name_piece_of_nothing_is_a_fallback_name():
    assert name_piece("") == name_piece(None) == name_piece("///") == "untitled"


def test_name_piece_is_bounded_in_bytes_without_splitting_a_character():
    piece = name_piece("東京" * 200)
    assert len(piece.encode("utf-8")) <= MAX_PIECE_BYTES and set(piece) == {"東", "京"}


def test_name_piece_keeps_letters_and_marks_of_any_script():
    assert name_piece("Café — हिन्दी") == "Café-हिन्दी"


def test_name_piece_avoids_names_windows_reserves():
    assert name_piece("CON") == "_CON" and name_piece("nul.txt") == "_nul.txt"


def test_template_literals_keep_their_meaning_and_data_is_one_tagged_name():
    path = render_path("notes/{{ steps.page.outputs.title }}.md")
    assert path.startswith("notes/etc-passwd-") and path.endswith(".md") and path.count("/") == 1


def test_the_same_title_in_two_runs_renders_two_names():
    assert render_path("{{ steps.page.outputs.title }}", seed="r1/save") != \
        render_path("{{ steps.page.outputs.title }}", seed="r2/save")


def test_a_shared_name_has_no_tag():
    assert render_path("logs/{{ steps.page.outputs.title }}.md", seed=None) == "logs/etc-passwd.md"


def test_run_fields_are_not_data_and_add_no_tag():
    assert render_path("runs/{{ run.id }}.md") == "runs/r1.md"


def test_reference_syntax_inside_a_title_is_not_expanded():
    path = render_path("{{ steps.page.outputs.title }}", outputs={"page": {"title": "{{ run.id }}"}})
    assert path.startswith("run.id-") and "{{" not in path


def test_step_output_in_a_folder_of_an_absolute_path_is_refused_when_rendered():
    with pytest.raises(dag.RenderError, match="only fill the file name"):
        render_path("/srv/{{ steps.page.outputs.title }}/x.md")


def test_write_file_runs_in_a_worker_thread_under_the_step_timeout():
    spec = SPECS["write_file"]
    assert spec.blocking and not spec.inline


def test_windows_device_names_with_superscript_digits_are_not_used_as_names():
    # Windows reserves COM¹-COM³ and LPT¹-LPT³ too, with or without an extension.
    assert name_piece("COM¹") == "_COM¹" and name_piece("lpt³.md") == "_lpt³.md"


def test_an_exclusive_open_leaves_an_existing_file_alone(tmp_path):
    (tmp_path / "note.md").write_text("mine")
    with pytest.raises(FileExistsError):
        safepath.open_for_write("note.md", tmp_path, append=False, exclusive=True)
    assert (tmp_path / "note.md").read_text() == "mine"
    fd, where = safepath.open_for_write("other.md", tmp_path, append=False, exclusive=True)
    os.close(fd)
    assert where == tmp_path / "other.md"
