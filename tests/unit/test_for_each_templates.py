"""for_each and on_overflow in templates: what is refused at load, and how it says so."""

from __future__ import annotations

import pytest

from hybrid_engine.errors import TemplateError
from hybrid_engine.templates import validate


def load(steps):
    return validate({"name": "fe", "steps": steps}, "fe.yaml")


def problem(steps) -> str:
    with pytest.raises(TemplateError) as info:
        load(steps)
    return info.value.message


SPLIT = {"id": "parts", "action": "split_text", "params": {"text": "some text"}}


def test_the_list_step_becomes_a_dependency_of_the_for_each_step():
    tpl = load([SPLIT, {"id": "each", "action": "template", "for_each": "{{ steps.parts.outputs.parts }}",
                        "params": {"template": "{{ item }}"}}])
    assert tpl.steps[1].dependencies == ["parts"]


def test_for_each_on_a_missing_step_is_refused_naming_it():
    msg = problem([{"id": "each", "action": "template", "for_each": "{{ steps.nope.outputs.parts }}",
                    "params": {"template": "{{ item }}"}}])
    assert msg == "fe.yaml: step 'each', field 'for_each': reference to unknown step 'nope'"


def test_for_each_that_is_not_one_reference_is_refused():
    msg = problem([SPLIT, {"id": "each", "action": "template", "for_each": "parts",
                           "params": {"template": "{{ item }}"}}])
    assert "step 'each', field 'for_each': expected one reference to an upstream list" in msg


def test_nested_for_each_is_refused():
    msg = problem([SPLIT,
                   {"id": "a", "action": "template", "for_each": "{{ steps.parts.outputs.parts }}",
                    "params": {"template": "{{ item }}"}},
                   {"id": "b", "action": "template", "for_each": "{{ steps.a.outputs.text }}",
                    "params": {"template": "{{ item }}"}}])
    assert "step 'b', field 'for_each': nested for_each is not supported: step 'a' itself runs per item" in msg


def test_a_for_each_that_closes_a_cycle_is_refused():
    msg = problem([{"id": "parts", "action": "split_text", "dependencies": ["each"],
                    "params": {"text": "{{ steps.each.outputs.text }}"}},
                   {"id": "each", "action": "template", "for_each": "{{ steps.parts.outputs.parts }}",
                    "params": {"template": "{{ item }}"}}])
    assert "field 'dependencies': cycle" in msg


def test_item_outside_a_for_each_step_is_refused():
    msg = problem([{"id": "t", "action": "template", "params": {"template": "{{ item }}"}}])
    assert msg == "fe.yaml: step 't', field 'params.template': {{ item }} is defined only in a step with for_each"


def test_for_each_over_an_output_the_step_does_not_have_is_refused():
    msg = problem([SPLIT, {"id": "each", "action": "template", "for_each": "{{ steps.parts.outputs.chunks }}",
                           "params": {"template": "{{ item }}"}}])
    assert "step 'each', field 'for_each': step 'parts' (split_text) has no output 'chunks'" in msg


def test_for_each_written_as_an_action_is_refused_with_the_right_spelling():
    msg = problem([{"id": "x", "action": "for_each"}])
    assert "unknown action 'for_each'" in msg and "for_each is a step key" in msg


def test_an_unknown_on_overflow_is_refused_at_load():
    msg = problem([{"id": "s", "action": "openai_chat",
                    "params": {"model": "gpt-4o-mini", "prompt": "hi", "on_overflow": "shrink"}}])
    assert msg == "fe.yaml: step 's', field 'params.on_overflow': 'shrink' is not one of fail, truncate, map_reduce"
