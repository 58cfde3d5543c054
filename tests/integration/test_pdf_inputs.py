"""PDFs as input: `run --input file.pdf`, ingest of a base64 PDF, text with page markers
for the model, and a scanned PDF refused with a code instead of an empty prompt."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pdf_writer import fixtures

DATA = Path(__file__).resolve().parents[1] / "data" / "pdf"


@pytest.fixture
def home(he_home):
    from hybrid_engine.templates import seed_templates

    seed_templates(he_home / "templates")
    return he_home


def steps_of(cli, run_id: str) -> dict:
    return {s["id"]: s for s in cli.json("export", run_id)["steps"]}


def test_pdf_fixtures_are_what_the_writer_makes():
    for name, data in fixtures().items():
        assert (DATA / name).read_bytes() == data, f"tests/data/pdf/{name}: rerun python tests/pdf_writer.py"


def test_run_input_pdf_stores_the_bytes_once_as_base64_typed_application_pdf(cli, home):
    run_id = cli("run", "page-text", "--input", DATA / "report.pdf", check=True).stdout.strip()
    page = steps_of(cli, run_id)["page"]["outputs"]
    assert page["content_type"] == "application/pdf"
    assert base64.b64decode(page["content"]) == (DATA / "report.pdf").read_bytes()


def test_pdf_text_reaches_the_model_with_page_markers(cli, home, fake_provider):
    cli.env.update(fake_provider.env())
    proc = cli("run", "page-digest", "--input", DATA / "report.pdf", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    [request] = fake_provider.requests_for("openai")
    prompt = request.body["messages"][-1]["content"]
    assert "[page 2]\nDredging plan" in prompt and "[page 3]" in prompt
    assert "Title: Harbour survey" in prompt


def test_extract_text_reports_the_pdf_page_count(cli, home):
    cli("run", "page-text", "--input", DATA / "report.pdf", "--wait", check=True)
    run_id = cli.json("runs", "--json")["runs"][0]["id"]
    text = steps_of(cli, run_id)["text"]
    assert text["status"] == "COMPLETED"
    assert text["outputs"]["pages"] == 3 and text["outputs"]["pages_without_text"] == 0


def test_a_scanned_pdf_fails_its_extract_step_with_pdf_no_text_and_sends_nothing(cli, home, fake_provider):
    cli.env.update(fake_provider.env())
    proc = cli("run", "page-digest", "--input", DATA / "scanned.pdf", "--wait", "--json")
    assert proc.returncode == 1
    run_id = cli.json("runs", "--json")["runs"][0]["id"]
    text = steps_of(cli, run_id)["text"]
    assert text["status"] == "FAILED"
    assert text["error_code"] == "pdf_no_text" and "no text layer" in text["error"]
    assert fake_provider.requests_for("openai") == []


def test_ingest_refuses_a_pdf_that_is_not_base64_naming_the_field(cli, home, tmp_path):
    run_id = cli("run", "page-text", check=True).stdout.strip()
    page = tmp_path / "page.txt"
    page.write_text("plain words, not base64!", encoding="utf-8")
    proc = cli("ingest", run_id, "--content-file", page, "--content-type", "application/pdf")
    assert proc.returncode == 2
    assert "content:" in proc.stderr and "base64" in proc.stderr


def test_a_damaged_pdf_fails_with_bad_pdf(cli, home, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not the rest of a PDF\n")
    cli("run", "page-text", "--input", broken, "--wait")
    run_id = cli.json("runs", "--json")["runs"][0]["id"]
    text = steps_of(cli, run_id)["text"]
    assert text["status"] == "FAILED" and text["error_code"] == "bad_pdf"


def test_the_estimate_of_a_scanned_pdf_says_the_model_step_would_not_be_sent(cli, home):
    est = cli.json("estimate", "page-digest", "--input", DATA / "scanned.pdf", "--json")
    [summary] = est["steps"]
    assert "would not be sent" in summary["error"] and "pdf_no_text" in summary["error"]
    assert est["total_cost_max"] == 0
