"""SaveNote alone: which file a note goes to when its name is taken."""

from __future__ import annotations

from hybrid_engine.adapters import load_action
from hybrid_engine.adapters.base import StepContext

FACTS = {"run_id": "r1", "workflow": "wf", "page": {"title": "Once", "url": "https://example.org", "captured_at": None},
         "models": [], "cost_usd": 0.0, "cost_state": "exact"}


def save(run_id: str, step_id: str = "note") -> str:
    ctx = StepContext(run_id, step_id, "save_note", 1, run_facts=lambda: {**FACTS, "run_id": run_id})
    return load_action("save_note").compute({"content": f"from {run_id}"}, ctx).outputs["path"]


def test_a_note_step_run_again_rewrites_its_own_note(he_home, write_config, tmp_path):
    write_config(f'[notes]\nfolder = "{tmp_path / "vault"}"\n')
    first = save("run-a")
    assert save("run-a") == first
    assert [p.name for p in (tmp_path / "vault").iterdir()] == ["Once.md"]


def test_another_run_with_the_same_title_keeps_the_first_note(he_home, write_config, tmp_path):
    write_config(f'[notes]\nfolder = "{tmp_path / "vault"}"\n')
    first, second = save("run-a"), save("run-b")
    assert first != second and open(first).read().endswith("from run-a\n")
    assert save("run-b") == second  # and its own re-run rewrites the tagged one
    assert len(list((tmp_path / "vault").iterdir())) == 2


def test_a_daily_source_link_percent_encodes_line_breaks_and_spaces_of_its_url():
    from hybrid_engine.adapters.notes import _md_url

    assert _md_url("https://a.example/b c\n## x") == "https://a.example/b%20c%0A##%20x"
