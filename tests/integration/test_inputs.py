"""What the CLI and the host take in: input files (size, encoding), --metadata, content types
given as short names (html, text, json, markdown), and run ids given as a prefix."""

from __future__ import annotations

import resource

import pytest

from host_client import HostClient

# The CLI under test gets at most this much address space: a command that reads /dev/zero whole
# fails here with MemoryError instead of eating the machine's memory.
ADDRESS_SPACE = 1 << 30


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.fixture
def home(he_home):
    from hybrid_engine.templates import seed_templates

    seed_templates(he_home / "templates")
    return he_home


def capture_outputs(cli, run_id: str) -> dict:
    doc = cli.json("export", run_id)
    return next(s for s in doc["steps"] if s["action"] == "capture")["outputs"]


# ---- input files ----------------------------------------------------------------------------

def test_dev_zero_as_input_is_refused_at_the_size_limit_not_read_until_memory_runs_out(cli, home):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "hybrid_engine", "run", "page-text", "--input", "/dev/zero"],
                          env=cli.env, capture_output=True, text=True, timeout=120, preexec_fn=_limited)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == ("hybrid-engine: /dev/zero: more than the 67108864 byte limit "
                                   "(not a regular file: stopped reading there)")
    assert cli.json("runs", "--json")["runs"] == []


def test_one_invalid_utf8_byte_is_replaced_and_the_other_characters_stay(cli, home, tmp_path):
    page = tmp_path / "notes.txt"
    page.write_bytes("café crème, naïve ".encode("utf-8") + b"\xff" + " fin é".encode("utf-8"))
    run_id = cli("run", "page-text", "--input", page, check=True).stdout.strip()
    assert capture_outputs(cli, run_id)["content"] == "café crème, naïve \ufffd fin é"


def test_a_page_declaring_windows_1252_is_decoded_as_windows_1252(cli, home, tmp_path):
    page = tmp_path / "old.html"
    page.write_bytes(b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
                     b"</head><body><p>caf\xe9 \x93quoted\x94 \x80 5</p></body></html>")
    run_id = cli("run", "page-text", "--input", page, check=True).stdout.strip()
    assert "<p>café “quoted” € 5</p>" in capture_outputs(cli, run_id)["content"]


def test_a_page_declaring_meta_charset_iso_8859_1_reads_as_the_standard_says(cli, home, tmp_path):
    page = tmp_path / "latin.html"
    page.write_bytes(b'<meta charset="ISO-8859-1"><p>d\xe9j\xe0 vu \x85</p>')  # 0x85: windows-1252's ellipsis
    run_id = cli("run", "page-text", "--input", page, check=True).stdout.strip()
    assert "déjà vu …" in capture_outputs(cli, run_id)["content"]


def test_metadata_nested_too_deeply_exits_2_with_a_message(cli, home, tmp_path):
    page = tmp_path / "p.txt"
    page.write_text("hello", encoding="utf-8")
    run_id = cli("run", "page-text", check=True).stdout.strip()
    deep = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    proc = cli("ingest", run_id, "--content-file", page, "--metadata", deep)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == "hybrid-engine: --metadata: nested deeper than 32 levels"


def test_metadata_nested_too_deeply_is_a_bad_request_for_the_host(cli, home):
    run_id = cli("run", "page-text", check=True).stdout.strip()
    deep: dict = {}
    for _ in range(100):  # well within what the host's JSON parser takes
        deep = {"a": deep}
    with HostClient(home) as host:
        error = host.error("external_data.add", workflow_id=run_id, content="z", metadata=deep)
    assert error["code"] == "bad_request" and "metadata: nested deeper than 32 levels" in error["message"]


# ---- content types: short names ------------------------------------------------------------------

SHORT_NAMES = [("text", "text/plain"), ("html", "text/html"), ("json", "application/json"),
               ("markdown", "text/markdown")]


@pytest.mark.parametrize("name,mime", SHORT_NAMES)
def test_cli_ingest_takes_a_short_content_type_and_stores_the_mime_type(cli, home, tmp_path, name, mime):
    page = tmp_path / "p.txt"
    page.write_text('{"k": 1}', encoding="utf-8")
    run_id = cli("run", "page-text", check=True).stdout.strip()
    resp = cli.json("ingest", run_id, "--content-file", page, "--content-type", name)
    assert resp["status"] == "COMPLETED"
    assert capture_outputs(cli, run_id)["content_type"] == mime


@pytest.mark.parametrize("name,mime", SHORT_NAMES)
def test_cli_run_input_takes_a_short_content_type(cli, home, tmp_path, name, mime):
    page = tmp_path / "p.bin"
    page.write_text("plain words", encoding="utf-8")
    run_id = cli("run", "page-text", "--input", page, "--content-type", name.upper(), check=True).stdout.strip()
    assert capture_outputs(cli, run_id)["content_type"] == mime


def test_cli_refuses_an_unknown_content_type_naming_the_option(cli, home, tmp_path):
    page = tmp_path / "p.txt"
    page.write_text("x", encoding="utf-8")
    proc = cli("run", "page-text", "--input", page, "--content-type", "video/mp4")
    assert proc.returncode == 2
    assert proc.stderr.startswith("hybrid-engine: --content-type: 'video/mp4' is not supported")


@pytest.mark.parametrize("name,mime", SHORT_NAMES)
def test_host_capture_and_external_data_take_short_content_types(home, cli, name, mime):
    with HostClient(home) as host:
        captured = host.call("capture", template="page-text", page={"content": "x", "content_type": name})
        run_id = cli("run", "page-text", check=True).stdout.strip()
        host.call("external_data.add", workflow_id=run_id, content="y", content_type=name)
    assert capture_outputs(cli, captured["run_id"])["content_type"] == mime
    assert capture_outputs(cli, run_id)["content_type"] == mime


# ---- run id prefixes ------------------------------------------------------------------------------

@pytest.fixture
def two_ab_runs(service, monkeypatch):
    from hybrid_engine import service as service_module

    ids = iter(["ab12000000000001", "ab34000000000002", "cd56000000000003"])
    monkeypatch.setattr(service_module, "new_run_id", lambda: next(ids))
    made = [service.create_run("page-text") for _ in range(3)]
    service.store.close()
    return made


def test_a_prefix_matching_several_runs_is_ambiguous_and_lists_them(cli, home, two_ab_runs):
    proc = cli("show", "ab")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("hybrid-engine: ambiguous run id 'ab': matches ab12000000000001 (page-text, 20")
    assert "ab34000000000002 (page-text, 20" in line and "cd56" not in line
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_host_answers_an_ambiguous_prefix_with_bad_request_and_the_same_text(cli, home, two_ab_runs):
    expected = cli("show", "ab").stderr.strip().removeprefix("hybrid-engine: ")
    with HostClient(home) as host:
        error = host.error("runs.get", run_id="ab")
    assert error["code"] == "bad_request" and error["message"] == expected


def test_a_prefix_matching_one_run_still_names_it(cli, home, two_ab_runs):
    assert cli.json("show", "ab3", "--json")["id"] == "ab34000000000002"
    assert cli.json("show", "c", "--json")["id"] == "cd56000000000003"
