"""A bad template file is refused alone, quickly, with its name, and the others still load.

The inputs are attacks as much as mistakes: nesting deep enough to exhaust recursion, a
1 KB YAML file whose aliases expand to a billion strings, a file far over the size limit,
and a generated template with more steps than the limit. Each is refused by a limit
checked before the expensive part, so none of these tests can hang or exhaust memory.
"""

import tracemalloc

import pytest

from hybrid_engine import templates
from hybrid_engine.errors import TemplateError
from hybrid_engine.models import MAX_STEPS
from hybrid_engine.plans import template_plan
from hybrid_engine.templates import TemplateRegistry, load_file

GOOD = "name: good\nsteps:\n  - {id: a, action: noop}\n"


def _billion_laughs() -> str:
    """Nine levels of nine aliases: about 1 KB of text, 9**9 (387 million) strings expanded.
    The anchors sit in a parameter that takes any value, so the file is otherwise valid."""
    levels = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        levels.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "name: lol\nsteps:\n  - id: a\n    action: noop\n    params:\n      value:\n" + "".join(
        f"        - {level}\n" for level in levels)


def _folder_with(tmp_path, name: str, text: str):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "good.yaml").write_text(GOOD)
    (folder / name).write_text(text)
    return folder


def _chain(n: int, ref_first: bool = False) -> dict:
    steps = [{"id": "s0", "action": "noop"}]
    for i in range(1, n):
        step = {"id": f"s{i}", "action": "noop", "dependencies": [f"s{i - 1}"]}
        if ref_first:  # every step reads the first one's output, as steps read the captured page
            step.update(action="template", params={"template": "{{ steps.s0.outputs.value }}"})
        steps.append(step)
    return {"name": f"chain-{n}", "steps": steps}


def test_deeply_nested_yaml_is_that_files_error_and_the_others_still_load(he_home, tmp_path):
    folder = _folder_with(tmp_path, "deep.yaml", "name: deep\nsteps: " + "[" * 500 + "]" * 500 + "\n")
    reg = TemplateRegistry(folder)
    assert [t.name for t in reg.all()] == ["good"]
    [err] = reg.errors()
    assert "deep.yaml" in err.message and "nested deeper than 64 levels" in err.message


def test_deeply_nested_json_is_that_files_error_and_the_others_still_load(he_home, tmp_path):
    folder = _folder_with(tmp_path, "deep.json", '{"name": "deep", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}")
    reg = TemplateRegistry(folder)
    assert reg.get("good").name == "good"
    [err] = reg.errors()
    assert "deep.json" in err.message and "nested deeper than 64 levels" in err.message


def test_json_nested_past_the_limit_but_short_of_a_recursion_error_is_refused(write_template):
    value = "1"
    for _ in range(100):
        value = '{"a": ' + value + "}"
    text = '{"name": "deep", "steps": [{"id": "a", "action": "noop", "params": {"value": ' + value + "}}]}"
    with pytest.raises(TemplateError) as info:
        load_file(write_template(text, "deep.json"))
    assert "deep.json: nested deeper than 64 levels" in info.value.message


def test_yaml_alias_bomb_is_refused_before_it_expands(he_home, tmp_path):
    bomb = _billion_laughs()
    assert len(bomb) < 1100
    folder = _folder_with(tmp_path, "lol.yaml", bomb)
    reg = TemplateRegistry(folder)
    assert [t.name for t in reg.all()] == ["good"]
    [err] = reg.errors()
    assert "lol.yaml" in err.message and "values once aliases are expanded" in err.message


def test_yaml_alias_inside_its_own_anchor_is_refused(write_template):
    with pytest.raises(TemplateError) as info:
        load_file(write_template("name: x\nsteps: &s [{id: a, action: noop, params: {value: *s}}]\n"))
    assert "alias *s refers to a value that contains it" in info.value.message


def test_yaml_aliases_within_the_limits_still_work(write_template):
    tpl = load_file(write_template("""
        name: shared
        steps:
          - {id: a, action: template, params: &p {template: "hi"}}
          - {id: b, action: template, params: {<<: *p}, dependencies: [a]}
        """))
    assert [s.params for s in tpl.steps] == [{"template": "hi"}, {"template": "hi"}]


def test_oversize_file_is_refused_without_being_read(write_template):
    path = write_template("", "huge.yaml")
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MiB on paper, nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as info:
            load_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "huge.yaml" in info.value.message and "over the limit of 2,097,152 bytes" in info.value.message
    assert peak < 1024 * 1024


def test_template_over_the_step_limit_is_refused_naming_the_limit(write_template):
    steps = [{"id": f"s{i}", "action": "noop"} for i in range(MAX_STEPS + 1)]
    path = write_template({"name": "many", "steps": steps}, "many.json")
    with pytest.raises(TemplateError) as info:
        load_file(path)
    assert "many.json" in info.value.message and "over the limit of 10,000 steps" in info.value.message


def test_a_template_at_the_step_limit_loads(write_template):
    assert len(load_file(write_template(_chain(MAX_STEPS), "limit.json")).steps) == MAX_STEPS


def _validation_peak(data: dict) -> int:
    tracemalloc.start()
    try:
        template_plan(templates.validate(data, "chain.json"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_validation_memory_grows_linearly_with_a_chain(he_home):
    """Memory, not time: allocation is deterministic. A set of every ancestor per step made
    the peak grow about 4x when the chain doubled."""
    small, large = _chain(1000, ref_first=True), _chain(2000, ref_first=True)
    _validation_peak(_chain(10, ref_first=True))  # imports and caches outside the measurement
    ratio = _validation_peak(large) / _validation_peak(small)
    assert ratio < 2.5, f"peak memory grew {ratio:.2f}x for 2x the steps"
