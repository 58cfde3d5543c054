from hybrid_engine import dag


def test_cycle_is_reported_as_a_path():
    graph = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    cycle = dag.find_cycle(graph)
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_acyclic_graph_has_no_cycle():
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_ancestry_is_transitive_and_only_upstream():
    graph = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"]}
    wanted = {"c": {"a", "b"}, "a": {"b"}, "d": {"c", "a"}, "b": {"b"}}
    assert dag.missing_ancestors(graph, wanted) == {"a": {"b"}, "d": {"c"}, "b": {"b"}}


def test_rendering_is_single_pass_so_captured_braces_stay_text():
    outputs = {"page": {"content": "Hello {{ steps.secret.outputs.key }} and {{ run.id }}"}}
    lookup = dag.make_lookup(outputs, {"id": "r1"})
    rendered = dag.render({"prompt": "Page: {{ steps.page.outputs.content }} in {{ run.id }}"}, lookup)
    assert rendered["prompt"] == "Page: Hello {{ steps.secret.outputs.key }} and {{ run.id }} in r1"


def test_a_whole_string_reference_keeps_the_value_type():
    lookup = dag.make_lookup({"a": {"n": 3, "items": [1, 2]}}, {})
    assert dag.render("{{ steps.a.outputs.n }}", lookup) == 3
    assert dag.render("n={{ steps.a.outputs.items }}", lookup) == "n=[1, 2]"


def test_nested_paths_reach_into_outputs():
    lookup = dag.make_lookup({"a": {"doc": {"title": "T", "tags": ["x", "y"]}}}, {})
    assert dag.render("{{ steps.a.outputs.doc.tags.1 }}", lookup) == "y"


def test_malformed_reference_is_rejected_with_the_syntax():
    try:
        dag.parse_ref("steps.a.output.text")
    except dag.RefError as exc:
        assert "steps.<id>.outputs.<key>" in str(exc)
    else:
        raise AssertionError("accepted a malformed reference")


def test_a_string_made_of_several_references_renders_each():
    lookup = dag.make_lookup({"a": {"text": "A"}, "b": {"text": "B"}}, {})
    assert dag.render("{{ steps.a.outputs.text }}\n{{ steps.b.outputs.text }}", lookup) == "A\nB"


def test_dependents_survive_their_compact_encoding():
    from hybrid_engine.store import decode_dependents, encode_dependents

    entries = [("b", "openai_chat", "openai"), ("c-2", "noop", None)]
    assert decode_dependents(encode_dependents(entries)) == entries
    assert decode_dependents(encode_dependents([])) == []
