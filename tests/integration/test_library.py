"""The library through the real host: runs named by their page, full-text search, "already
sent", reuse at $0, deleting, the store's size and the retention of raw captures."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from host_client import HostClient
from polling import wait_for

from hybrid_engine.store import SCHEMA_VERSION

SUMMARY_A = "Heliotrope gardens attract butterflies all summer."
SUMMARY_B = "Basalt columns form when lava cools slowly."


def page(n: int, **extra) -> dict:
    return {"content": f"<html><body><article><p>Page number {n} about nothing much at all.</p>"
                       f"</article></body></html>", "content_type": "text/html",
            "source_url": f"https://www.example.org/article-{n}", "title": f"Article {n}", **extra}


def write_template(home: Path, name: str, prompt: str = "Summarise: {{ steps.page.outputs.content }}") -> str:
    folder = home / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    steps = [{"id": "page", "action": "capture"},
             {"id": "summary", "action": "openai_chat", "dependencies": ["page"],
              "params": {"model": "gpt-4o-mini", "prompt": prompt}}]
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "steps": steps}), encoding="utf-8")
    return name


@pytest.fixture
def home(he_home) -> Path:
    write_template(he_home, "digest")
    # No model: for what is settled when the capture is taken (nothing reaches the shared fake later).
    (he_home / "templates" / "keep.json").write_text(json.dumps({"name": "keep", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "echo", "action": "template", "dependencies": ["page"],
         "params": {"template": "{{ steps.page.outputs.title }}"}}]}), encoding="utf-8")
    return he_home


@pytest.fixture
def host(home, fake_provider):
    with HostClient(home, extra_env=fake_provider.env()) as client:
        client.call("hello", protocol=1)
        yield client
        assert client.stdout_problems == []


def finished(host, run_id: str) -> dict:
    return wait_for(lambda: (lambda d: d if d["status"] in ("COMPLETED", "FAILED") else None)(
        host.call("runs.get", run_id=run_id)), timeout=60, what=f"run {run_id} to finish")


def send(host, fake, n: int, summary: str, template: str = "digest", **extra) -> str:
    fake.script("openai", text=summary)
    run_id = host.call("capture", template=template, page=page(n, **extra))["run_id"]
    assert finished(host, run_id)["status"] == "COMPLETED"
    return run_id


# ---- runs named by their page -----------------------------------------------------------

def test_runs_list_and_get_carry_the_page_a_run_was_given(host, fake_provider):
    favicon = "https://www.example.org/favicon.ico"
    run_id = send(host, fake_provider, 1, SUMMARY_A, metadata={"favicon": favicon})
    expected = {"title": "Article 1", "url": "https://www.example.org/article-1", "site": "example.org",
                "favicon": favicon}
    assert host.call("runs.get", run_id=run_id)["page"] == expected
    (listed,) = host.call("runs.list")["runs"]
    assert listed["page"] == expected


BAD_FAVICONS = ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "file:///etc/passwd",
                "chrome://favicon/x", "https://" + "x" * 20000, "data:image/png;base64," + "A" * 20000,
                "data:image/png;base64", "http://", 42]


def test_a_favicon_that_is_not_a_small_http_or_data_image_url_is_dropped(host):
    for favicon in BAD_FAVICONS:
        run_id = host.call("capture", template="keep", page=page(2, metadata={"favicon": favicon}))["run_id"]
        assert host.call("runs.get", run_id=run_id)["page"]["favicon"] is None, favicon


def test_a_data_image_favicon_is_kept_as_given(host):
    icon = "data:image/png;base64,iVBORw0KGgo="
    run_id = host.call("capture", template="keep", page=page(3, metadata={"favicon": icon}))["run_id"]
    assert host.call("runs.get", run_id=run_id)["page"]["favicon"] == icon


def test_a_page_title_is_kept_to_300_characters_in_lists_and_search(host):
    """A page can make its title any length: every list and search would carry all of it."""
    run_id = host.call("capture", template="keep", page=page(4, title="Long " + "T" * 400_000))["run_id"]
    assert len(host.call("runs.get", run_id=run_id)["page"]["title"]) == 300
    assert len(host.call("runs.list")["runs"][0]["page"]["title"]) == 300
    (found,) = host.call("library.search", query="long")["runs"]
    assert len(found["page"]["title"]) == 300 and len(found["snippet"]) < 1000


def test_a_search_snippet_stays_short_when_the_result_holds_one_huge_word(host, fake_provider):
    send(host, fake_provider, 5, "Heliotrope " + "x" * 200_000 + " gardens")
    (found,) = host.call("library.search", query="heliotrope")["runs"]
    assert len(found["snippet"]) <= 500 and "\x02Heliotrope\x03" in found["snippet"]
    (prefix,) = host.call("library.search", query="xxx")["runs"]  # the huge word itself matches
    assert len(prefix["snippet"]) <= 500 and prefix["snippet"].count("\x02") == prefix["snippet"].count("\x03")


def test_a_run_without_a_title_or_address_has_page_null(host):
    run_id = host.call("capture", template="keep", page={"content": "x"})["run_id"]
    assert host.call("runs.get", run_id=run_id)["page"] is None
    assert host.call("runs.list")["runs"][0]["page"] is None


# ---- search -----------------------------------------------------------------------------

def test_search_finds_run_by_word_of_its_summary(host, fake_provider):
    first = send(host, fake_provider, 1, SUMMARY_A)
    send(host, fake_provider, 2, SUMMARY_B)
    found = host.call("library.search", query="butterflies")
    assert [r["id"] for r in found["runs"]] == [first] and found["total"] == 1
    snippet = found["runs"][0]["snippet"]
    assert "\x02butterflies\x03" in snippet
    assert found["runs"][0]["page"]["title"] == "Article 1"


def test_search_matches_titles_urls_and_word_prefixes(host, fake_provider):
    first = send(host, fake_provider, 1, SUMMARY_A)
    second = send(host, fake_provider, 2, SUMMARY_B)
    assert [r["id"] for r in host.call("library.search", query="article 2")["runs"]] == [second]
    assert [r["id"] for r in host.call("library.search", query="article-1")["runs"]] == [first]
    assert [r["id"] for r in host.call("library.search", query="helio")["runs"]] == [first]
    assert {r["id"] for r in host.call("library.search", query="example")["runs"]} == {first, second}


SEARCH_SYNTAX = [
    ('"', 0), ("*", 0), ("AND", 0), ("OR NOT", 0), ("-", 0), ("NEAR(", 0), ("title:x", 0), ('""', 0),
    ('"lava', 1), ('lava"', 1), ("(lava", 1), ("lava*", 1), ("^lava", 1), ("- lava", 1), ("columns -lava", 1),
    ("l'ava", 0), ("lava AND", 0), ("{title}: lava", 0), ("lava NOT basalt", 0), ("lava)", 1), ("+lava", 1)]


def test_search_syntax_typed_by_a_user_is_taken_as_words_and_never_fails(host, fake_provider):
    """The summary is "Basalt columns form when lava cools slowly."; every word typed must be there."""
    send(host, fake_provider, 1, SUMMARY_B)
    got = {query: host.call("library.search", query=query)["total"] for query, _ in SEARCH_SYNTAX}
    assert got == dict(SEARCH_SYNTAX)


def test_search_filters_by_workflow_site_status_and_date(host, home, fake_provider):
    write_template(home, "other")
    wait_for(lambda: "other" in [t["name"] for t in host.call("templates.list")["templates"]], what="template")
    a = send(host, fake_provider, 1, SUMMARY_A)
    b = send(host, fake_provider, 2, SUMMARY_A, template="other")
    fake_provider.script("openai", status=401, error="bad key")
    c = host.call("capture", template="digest", page={**page(3), "source_url": "https://news.example.com/x"})["run_id"]
    assert finished(host, c)["status"] == "FAILED"

    def ids(**filters) -> set:
        return {r["id"] for r in host.call("library.search", **filters)["runs"]}

    assert ids(workflow="digest") == {a, c}
    assert ids(site="news.example.com") == {c} and ids(site="www.example.org") == {a, b}
    assert ids(status="FAILED") == {c} and ids(status="completed", query="heliotrope") == {a, b}
    today = time.strftime("%Y-%m-%d")
    assert ids(since=today, until=today) == {a, b, c}
    assert ids(until="2000-01-01") == set() and ids(since="2999-01-01") == set()


@pytest.mark.parametrize("fields, named", [({"status": "DONE"}, "status"), ({"since": "yesterday"}, "since"),
                                           ({"limit": 0}, "limit"), ({"query": 5}, "query"),
                                           ({"query": "x" * 501}, "query")])
def test_a_bad_search_field_is_a_bad_request_naming_it(host, fields, named):
    error = host.error("library.search", **fields)
    assert error["code"] == "bad_request" and named in error["message"]


@pytest.mark.parametrize("fields", [{"until": "9999-12-31"}, {"since": "0001-01-01"}])
def test_a_search_date_at_the_edge_of_the_calendar_is_a_bad_request_naming_it(host, fields):
    error = host.error("library.search", **fields)
    assert error["code"] == "bad_request" and error["field"] == next(iter(fields))
    assert host.call("library.search")["total"] == 0  # and the host keeps serving


def test_a_search_offset_past_what_the_store_can_count_is_a_bad_request(host):
    error = host.error("library.search", offset=2 ** 63)
    assert error["code"] == "bad_request" and error["field"] == "offset"


def test_the_index_follows_a_retried_run_to_its_new_result(host, fake_provider):
    fake_provider.script("openai", status=401, error="bad key")
    run_id = host.call("capture", template="digest", page=page(1))["run_id"]
    assert finished(host, run_id)["status"] == "FAILED"
    assert host.call("library.search", query="basalt")["total"] == 0
    fake_provider.script("openai", text=SUMMARY_B)
    host.call("runs.retry", run_id=run_id)
    wait_for(lambda: host.call("runs.get", run_id=run_id)["status"] == "COMPLETED", timeout=60, what="retry")
    assert [r["id"] for r in host.call("library.search", query="basalt")["runs"]] == [run_id]


# ---- delete -----------------------------------------------------------------------------

def test_runs_delete_removes_the_run_and_its_library_entry(host, fake_provider):
    gone = send(host, fake_provider, 1, SUMMARY_A)
    kept = send(host, fake_provider, 2, SUMMARY_A)
    assert host.call("runs.delete", run_id=gone) == {"run_id": gone, "deleted": True}
    assert [r["id"] for r in host.call("library.search", query="heliotrope")["runs"]] == [kept]
    assert host.error("runs.get", run_id=gone)["code"] == "not_found"
    assert host.call("runs.for_url", url=page(1)["source_url"])["runs"] == []
    assert host.call("spend")["today"] > 0  # what it spent still counts


def test_runs_rerun_sends_the_same_page_through_the_workflow_again(host, fake_provider):
    first = send(host, fake_provider, 1, SUMMARY_A)
    fake_provider.script("openai", text=SUMMARY_B)
    again = host.call("runs.rerun", run_id=first)
    assert again["rerun_of"] == first and again["run_id"] != first
    assert finished(host, again["run_id"])["page"] == host.call("runs.get", run_id=first)["page"]
    assert fake_provider.requests[-1].body == fake_provider.requests[0].body  # the same prompt, sent afresh


# ---- already sent, and reuse -----------------------------------------------------------------

def test_runs_for_url_names_earlier_runs_of_the_page_ignoring_its_fragment(host, fake_provider):
    run_id = send(host, fake_provider, 1, SUMMARY_A)
    (found,) = host.call("runs.for_url", url="https://www.example.org/article-1#comments")["runs"]
    assert found["run_id"] == run_id and found["workflow"] == "digest" and found["status"] == "COMPLETED"
    assert found["finished_at"] and found["cost"] > 0 and found["cost_state"] == "exact"
    assert found["page"]["title"] == "Article 1"
    assert host.call("runs.for_url", url="https://www.example.org/article-2")["runs"] == []


def test_capture_with_reuse_answers_with_the_earlier_run_and_calls_no_model(host, fake_provider):
    earlier = send(host, fake_provider, 1, SUMMARY_A)
    before = len(fake_provider.requests)
    result = host.call("capture", template="digest", page=page(1), reuse="reuse")
    assert result["run_id"] == result["reused_from"] == earlier and result["cost"] == 0
    assert len(host.call("runs.list")["runs"]) == 1  # no run made
    assert len(fake_provider.requests) == before  # and no request reached the provider


def test_capture_with_reuse_ask_names_the_earlier_run_and_makes_none(host, fake_provider):
    earlier = send(host, fake_provider, 1, SUMMARY_A)
    result = host.call("capture", template="digest", page=page(1), reuse="ask")
    assert result["run_id"] is None and result["reusable"]["run_id"] == earlier
    assert len(host.call("runs.list")["runs"]) == 1


def test_reuse_runs_afresh_when_the_content_or_the_template_changed(host, home, fake_provider):
    earlier = send(host, fake_provider, 1, SUMMARY_A)
    changed = host.call("capture", template="digest", page=page(1, content="<p>edited</p>"), reuse="reuse")
    assert changed["run_id"] != earlier and "reused_from" not in changed
    finished(host, changed["run_id"])
    write_template(home, "digest", prompt="In one line: {{ steps.page.outputs.content }}")
    wait_for(lambda: host.call("capture", template="digest", page=page(1), reuse="ask")["run_id"] is not None,
             what="the edited template to be a new version")


def test_reuse_runs_afresh_when_the_same_page_comes_with_another_selection(host, fake_provider):
    earlier = send(host, fake_provider, 1, SUMMARY_A, selection="Page number 1")
    fake_provider.script("openai", text=SUMMARY_B)
    other = host.call("capture", template="digest", page=page(1, selection="about nothing"), reuse="reuse")
    assert other["run_id"] != earlier and "reused_from" not in other
    finished(host, other["run_id"])
    same = host.call("capture", template="digest", page=page(1, selection="Page number 1"), reuse="reuse")
    assert same["reused_from"] == earlier


def test_reuse_never_offers_a_failed_run(host, fake_provider):
    fake_provider.script("openai", status=401, error="bad key")
    failed = host.call("capture", template="digest", page=page(1))["run_id"]
    assert finished(host, failed)["status"] == "FAILED"
    fake_provider.script("openai", text=SUMMARY_A)
    again = host.call("capture", template="digest", page=page(1), reuse="reuse")
    assert again["run_id"] != failed and "reused_from" not in again
    finished(host, again["run_id"])


def test_an_unknown_reuse_choice_is_a_bad_request(host):
    error = host.error("capture", template="digest", page=page(1), reuse="always")
    assert error["code"] == "bad_request" and error["field"] == "reuse"


# ---- size and retention -----------------------------------------------------------------------

def test_library_stats_shows_the_store_size_its_captures_and_the_retention(host, home, fake_provider):
    (home / "config.toml").write_text("[library]\nkeep_captures_days = 30\n", encoding="utf-8")
    send(host, fake_provider, 1, SUMMARY_A)
    stats = host.call("library.stats")
    assert stats["runs"] == 1 and stats["retention_days"] == 30
    assert stats["captures_bytes"] >= len(page(1)["content"]) and stats["db_bytes"] > stats["captures_bytes"]


def _age_runs(db: Path, days: float) -> None:
    """Move every run `days` into the past, as a year of clipping would leave them."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE runs SET created_at = created_at - ?", (days * 86400,))
    conn.close()


def test_old_raw_captures_are_dropped_results_kept_and_the_file_shrinks(home, cli, fake_provider_env, service):
    """The runs are made in this process (twenty CLI processes cost the suite 40 s); the prune
    and the searches after it go through the CLI, as a user types them."""
    from hybrid_engine.service import Service

    cli.env.update(fake_provider_env.env())
    big = "<html><body><article><p>" + "Filler words of an old page. " * 4000 + "</p></article></body></html>"
    fake_provider_env.script("openai", text=f"{SUMMARY_A} of an old page", times=20)
    for n in range(20):
        service.start("digest", content=big, source_url=f"https://example.org/{n}", content_type="text/html")
    _drain(service)
    _age_runs(home / "engine.db", 40)
    fake_provider_env.script("openai", text=SUMMARY_B)
    service.start("digest", content=big, source_url=None, content_type="text/html")  # a fresh one: kept whole
    _drain(service)
    assert [r["status"] for r in service.list_runs(limit=50)] == ["COMPLETED"] * 21
    # As the last process to close the file would: the log folded in, so the size below is the data's.
    assert service.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    service.store.close()
    (home / "config.toml").write_text("[library]\nkeep_captures_days = 30\n", encoding="utf-8")
    before = (home / "engine.db").stat().st_size

    result = cli.json("library", "--prune", "--json")
    assert result["pruned"]["captures_dropped"] == 20
    # The file gives back (at least most of) the twenty raw pages it no longer holds.
    assert before - (home / "engine.db").stat().st_size >= 0.8 * 20 * len(big)
    assert result["captures_bytes"] < len(big) * 2  # only the fresh run's page is left

    svc = Service()
    runs = {r["id"]: svc.run_document(r["id"], cut=None) for r in svc.list_runs(limit=50)}
    for doc in runs.values():
        capture = next(s for s in doc["steps"] if s["id"] == "page")["outputs"]
        summary = next(s for s in doc["steps"] if s["id"] == "summary")["outputs"]["text"]
        if SUMMARY_B in summary:
            assert capture["content"] == big
        else:
            assert "content" not in capture and capture["content_dropped"] is True
            assert capture["source_url"].startswith("https://example.org/") and SUMMARY_A in summary
    assert svc.store.file_bytes() == (home / "engine.db").stat().st_size  # the log was folded in
    assert cli.json("search", "butterflies", "--json")["total"] == 20
    assert cli.json("library", "--prune", "--json")["pruned"]["captures_dropped"] == 0  # once only


def test_the_background_worker_applies_the_retention_when_it_starts(home, cli):
    big = "<p>" + "An old page kept too long. " * 2000 + "</p>"
    for n in range(3):
        cli("run", "keep", "--input", _file(home, n, big), "--source-url", f"https://example.org/{n}", "--wait",
            check=True)
    _age_runs(home / "engine.db", 10)
    (home / "config.toml").write_text("[library]\nkeep_captures_days = 7\n", encoding="utf-8")
    cli("worker", "--background", "--linger", "0", check=True)
    assert cli.json("library", "--json")["captures_bytes"] < len(big)
    log = (home / "logs" / "hybrid-engine.log").read_text(encoding="utf-8")
    assert "dropped 3 raw page capture(s) older than 7 days" in log


def _drain(service) -> None:
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 60))


def _file(home: Path, n: int, text: str) -> str:
    path = home / f"page-{n}.html"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_bad_keep_captures_days_is_refused_naming_key_and_range(home, cli):
    (home / "config.toml").write_text("[library]\nkeep_captures_days = 0\n", encoding="utf-8")
    proc = cli("library", "--prune")
    assert proc.returncode == 2
    assert "[library] keep_captures_days" in proc.stderr and "1 to 36500" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_search_runs_and_show_print_no_terminal_escape_a_page_title_carries(home, cli):
    """A title that would set the clipboard (OSC 52) and clear the screen reaches the terminal as text."""
    title = "Tide\x1b]52;c;cHduZWQ=\x07 tables\x1b[2J\x9b31m"
    path = _file(home, 1, f"<html><head><title>{title}</title></head><body><p>Spring tides.</p></body></html>")
    run_id = cli.json("run", "keep", "--input", path, "--source-url", "https://www.example.org/tides", "--wait",
                      "--json")["id"]
    for args in (("search", "tide"), ("runs",), ("show", run_id)):
        out = cli(*args, check=True).stdout
        assert "tables" in out and not any(ch in out for ch in "\x1b\x07\x9b"), args


def test_runs_show_and_search_name_a_run_by_its_page_title(home, cli):
    """From the HTML's own <title> too, when the page comes with none (`run --input`)."""
    path = _file(home, 1, "<html><head><title>Tide tables</title></head><body><p>Spring tides.</p></body></html>")
    run_id = cli.json("run", "keep", "--input", path, "--source-url", "https://www.example.org/tides", "--wait",
                      "--json")["id"]
    # Plain text without an address: no page to name it by, so its workflow does.
    cli("run", "keep", "--input", _file(home, 2, "plain words"), "--content-type", "text", "--wait", check=True)
    listing = cli("runs", check=True).stdout.splitlines()
    assert listing[0].split()[:3] == ["run", "page", "template"]
    rows = {line.split()[0]: line for line in listing[2:]}
    assert "Tide tables" in rows[run_id]
    assert [line for line in rows.values() if "Tide tables" not in line][0].split()[1] == "keep"
    shown = cli("show", run_id, check=True).stdout.splitlines()
    assert shown[0] == "Tide tables" and "source: https://www.example.org/tides" in shown
    found = cli("search", "tide", check=True).stdout
    assert run_id in found and "example.org" in found and "[Tide] tables" in found


# ---- the schema 6 migration ---------------------------------------------------------------------

def test_a_database_from_before_the_library_gets_its_pages_and_index(home, cli, fake_provider):
    from hybrid_engine.service import Service

    cli.env.update(fake_provider.env())
    fake_provider.script("openai", text=SUMMARY_A)
    path = _file(home, 1, "<p>An old page.</p>")
    run_id = cli.json("run", "digest", "--input", path, "--source-url", "https://www.example.org/old", "--wait",
                      "--json")["id"]
    conn = sqlite3.connect(home / "engine.db")  # back to schema 5: no pages, no index, no batches
    conn.executescript("DROP TRIGGER runs_unindex; DROP TABLE library; DROP TABLE pages; DROP TABLE batch_items; "
                       "DROP TABLE batches; PRAGMA user_version = 5;")
    conn.close()

    svc = Service()
    assert svc.store.schema_version() == SCHEMA_VERSION
    assert svc.summary(run_id)["page"] == {"title": None, "url": "https://www.example.org/old",
                                           "site": "example.org", "favicon": None}
    assert cli.json("search", "heliotrope", "--json")["runs"][0]["id"] == run_id
