import pytest

from hybrid_engine.errors import TemplateError
from hybrid_engine.templates import TemplateRegistry, load_file

GOOD = """
name: good
steps:
  - id: page
    action: capture
  - id: text
    action: extract_text
    dependencies: [page]
    params: {html: "{{ steps.page.outputs.content }}"}
"""


def _error(write_template, text, name="wf.yaml") -> str:
    path = write_template(text, name)
    with pytest.raises(TemplateError) as info:
        load_file(path)
    return info.value.message


def test_valid_template_loads(write_template):
    tpl = load_file(write_template(GOOD))
    assert [s.id for s in tpl.steps] == ["page", "text"]
    assert tpl.capture_slots == ["page"]


def test_json_templates_load_too(write_template):
    path = write_template({"name": "j", "steps": [{"id": "a", "action": "noop"}]}, "wf.json")
    assert load_file(path).name == "j"


def test_cycle_names_file_step_and_field(write_template):
    msg = _error(write_template, """
        name: cyc
        steps:
          - {id: a, action: noop, dependencies: [b]}
          - {id: b, action: noop, dependencies: [a]}
        """)
    assert "wf.yaml" in msg and "field 'dependencies'" in msg and "cycle" in msg
    assert "step 'a'" in msg or "step 'b'" in msg


def test_unknown_dependency_names_the_missing_step(write_template):
    msg = _error(write_template, """
        name: dep
        steps:
          - {id: a, action: noop, dependencies: [nope]}
        """)
    assert "step 'a', field 'dependencies': unknown step 'nope'" in msg


def test_unknown_action_lists_known_ones(write_template):
    msg = _error(write_template, """
        name: act
        steps:
          - {id: a, action: teleport}
        """)
    assert "step 'a', field 'action': unknown action 'teleport'" in msg
    assert "openai_chat" in msg


def test_reference_to_a_step_that_is_not_upstream_is_rejected(write_template):
    msg = _error(write_template, """
        name: ref
        steps:
          - {id: a, action: noop}
          - {id: b, action: template, params: {template: "{{ steps.a.outputs.value }}"}}
        """)
    assert "step 'b', field 'params.template'" in msg and "not among its dependencies" in msg


def test_reference_to_an_unknown_output_key_is_rejected(write_template):
    msg = _error(write_template, """
        name: ref
        steps:
          - {id: a, action: capture}
          - {id: b, action: template, dependencies: [a], params: {template: "{{ steps.a.outputs.body }}"}}
        """)
    assert "has no output 'body'" in msg and "content" in msg


def test_malformed_reference_syntax_is_rejected(write_template):
    msg = _error(write_template, """
        name: ref
        steps:
          - {id: a, action: template, params: {template: "{{ page.text }}"}}
        """)
    assert "field 'params.template'" in msg and "is not a reference" in msg


def test_wrong_param_type_names_expected_type(write_template):
    msg = _error(write_template, """
        name: types
        steps:
          - {id: a, action: sleep, params: {seconds: "soon"}}
        """)
    assert "step 'a', field 'params.seconds': expected" in msg


def test_missing_required_param_is_named(write_template):
    msg = _error(write_template, """
        name: req
        steps:
          - {id: a, action: openai_chat, params: {model: gpt-4o-mini}}
        """)
    assert "field 'params.prompt': required by 'openai_chat'" in msg


def test_malformed_yaml_gives_line_and_column(write_template):
    msg = _error(write_template, "name: x\nsteps:\n  - id: a\n    action: [noop\n")
    assert "wf.yaml" in msg and "line" in msg and "malformed YAML" in msg


def test_every_problem_is_reported_at_once(write_template):
    msg = _error(write_template, """
        name: many
        steps:
          - {id: a, action: teleport}
          - {id: b, action: noop, dependencies: [zzz]}
        """)
    assert "2 problems" in msg


def test_registry_finds_by_name_and_by_file_stem(he_home, tmp_path):
    folder = tmp_path / "tpl"
    folder.mkdir()
    (folder / "digest.yaml").write_text(GOOD.replace("name: good", "name: my-digest"))
    reg = TemplateRegistry(folder)
    assert reg.get("my-digest").name == "my-digest"
    assert reg.get("digest").name == "my-digest"


def test_registry_sees_a_changed_file_without_restart(he_home, tmp_path):
    folder = tmp_path / "tpl"
    folder.mkdir()
    path = folder / "a.yaml"
    path.write_text("name: a\ndescription: one\nsteps:\n  - {id: x, action: noop}\n")
    reg = TemplateRegistry(folder)
    assert reg.get("a").description == "one"
    path.write_text("name: a\ndescription: two, longer\nsteps:\n  - {id: x, action: noop}\n")
    assert reg.get("a").description == "two, longer"


def test_watcher_reports_a_template_written_right_after_watch_returns(he_home, tmp_path):
    import threading

    folder = tmp_path / "tpl"
    folder.mkdir()
    reg = TemplateRegistry(folder)
    changed = threading.Event()
    stop = threading.Event()
    reg.watch(changed.set, stop)
    try:
        (folder / "new.yaml").write_text("name: new\nsteps:\n  - {id: x, action: noop}\n")
        assert changed.wait(10), "watchfiles did not report the new template"
        assert reg.get("new").name == "new"
    finally:
        stop.set()


def test_fresh_install_seeds_bundled_examples(he_home):
    reg = TemplateRegistry()
    names = {t.name for t in reg.all()}
    assert {"page-digest", "page-text"} <= names


def _save_step_error(write_template, path: str) -> str:
    return _error(write_template, {"name": "save", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "save", "action": "write_file", "dependencies": ["page"], "params": {"path": path, "content": "x"}}]})


def test_write_file_path_with_dotdot_is_refused_at_load(write_template):
    msg = _save_step_error(write_template, "../{{ steps.page.outputs.title }}.md")
    assert "step 'save', field 'params.path'" in msg and "'..'" in msg


def test_step_output_in_a_folder_of_an_absolute_path_is_refused_at_load(write_template):
    msg = _save_step_error(write_template, "~/notes/{{ steps.page.outputs.title }}/x.md")
    assert "step 'save', field 'params.path'" in msg and "only fill the file name" in msg


def test_another_users_home_folder_is_refused_at_load(write_template):
    assert "'~name'" in _save_step_error(write_template, "~root/.bashrc")
