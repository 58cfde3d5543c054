"""The HTTP API against input a careless script or a hostile caller sends: a real server, curl."""

from __future__ import annotations

import os

import pytest

from api_server import ApiServer
from host_client import HANG_GUARD_S

PAGE = "<html><head><title>Cart</title></head><body><p>Two items.</p></body></html>"
SITES = """
[[sites]]
match = "*.bank.example"
rule = "never"

[[sites]]
match = "shop.example"
rule = "strip_query"
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from hybrid_engine.templates import seed_templates

    home = tmp_path_factory.mktemp("hostile") / "he-home"
    seed_templates(home / "templates")
    (home / "config.toml").write_text(SITES, encoding="utf-8")
    with ApiServer(home) as server:
        yield server


def waiting_run(api) -> str:
    status, started = api.curl("POST", "/workflows", json_body={"template": "page-text"})
    assert status == 201
    return started["run_id"]


# A JSON string may spell a lone UTF-16 surrogate (\ud800) that no UTF-8 text holds: json.dumps
# writes them for emoji split in half, and such a body must be a 400 naming the field, not a 500.

def test_a_lone_surrogate_in_the_content_is_400_naming_the_field(api):
    run_id = waiting_run(api)
    status, body = api.curl("POST", f"/workflows/{run_id}/external-data",
                            data=b'{"content": "half an emoji \\ud83d"}', ctype="application/json")
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert body["error"]["field"] == "content" and "surrogate" in body["error"]["message"]
    assert api.curl("GET", f"/workflows/{run_id}")[1]["steps"][0]["status"] == "WAITING_FOR_INPUT"


def test_a_lone_surrogate_in_a_new_runs_title_is_400_and_makes_no_run(api):
    before = api.curl("GET", "/workflows?limit=1000")[1]["runs"]
    status, body = api.curl("POST", "/workflows", ctype="application/json",
                            data=b'{"template": "page-text", "content": "<p>x</p>", "title": "\\udc00 tail"}')
    assert status == 400 and body["error"]["field"] == "title"
    assert api.curl("GET", "/workflows?limit=1000")[1]["runs"] == before


def test_a_lone_surrogate_in_a_metadata_key_is_400_naming_metadata(api):
    run_id = waiting_run(api)
    status, body = api.curl("POST", f"/workflows/{run_id}/external-data", ctype="application/json",
                            data=b'{"content": "x", "metadata": {"ok": [1, {"\\ud800": 2}]}}')
    assert status == 400 and body["error"]["field"] == "metadata"


def test_a_surrogate_pair_is_text_and_is_stored(api):
    run_id = waiting_run(api)
    status, _ = api.curl("POST", f"/workflows/{run_id}/external-data",
                         data=b'{"content": "a whole emoji \\ud83d\\ude00"}', ctype="application/json")
    assert status == 200
    page = api.curl("GET", f"/workflows/{run_id}")[1]["steps"][0]
    assert page["outputs"]["content"] == "a whole emoji \U0001F600"


# ---- the per-site rules through the HTTP entry point -----------------------------------

def test_a_never_site_posted_to_post_workflows_is_refused_and_makes_no_run(api):
    before = api.curl("GET", "/workflows?limit=1000")[1]["runs"]
    status, body = api.curl("POST", "/workflows", json_body={"template": "page-text", "content": PAGE,
                                                             "source_url": "https://WWW.Bank.Example./statement"})
    assert status == 400 and body["error"]["code"] == "site_never" and body["error"]["field"] == "source_url"
    assert api.curl("GET", "/workflows?limit=1000")[1]["runs"] == before


def test_a_never_site_posted_as_external_data_leaves_the_slot_open(api):
    run_id = waiting_run(api)
    status, body = api.curl("POST", f"/workflows/{run_id}/external-data",
                            json_body={"content": PAGE, "source_url": "https://login.bank.example/"})
    assert status == 400 and body["error"]["code"] == "site_never"
    assert api.curl("GET", f"/workflows/{run_id}")[1]["steps"][0]["status"] == "WAITING_FOR_INPUT"


def test_metadata_source_url_cannot_bring_back_the_query_strip_query_removed(api):
    url = "https://shop.example/cart?session=s3cr3t"
    run_id = waiting_run(api)
    status, _ = api.curl("POST", f"/workflows/{run_id}/external-data",
                         json_body={"content": PAGE, "source_url": url, "metadata": {"source_url": url}})
    assert status == 200
    doc = api.curl("GET", f"/workflows/{run_id}")[1]
    assert "s3cr3t" not in str(doc)
    assert doc["steps"][0]["metadata"]["source_url"] == "https://shop.example/cart"


# ---- starting it -------------------------------------------------------------------------

@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_a_wildcard_address_even_with_the_loud_flag_is_refused_naming_what_to_give(cli, wildcard):
    """Requests name the address they called in Host, and only --host's passes the check:
    on 0.0.0.0 the server would answer every request 403."""
    proc = cli("serve", "--host", wildcard, "--expose-to-network", "--port", "0", timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "every address" in proc.stderr and "--host 192.168.1.5" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_token_path_that_is_no_regular_file_is_a_clear_error(cli, he_home, kind):
    """A folder there was a traceback; a FIFO made the command wait for a writer forever."""
    he_home.mkdir(parents=True, exist_ok=True)
    path = he_home / "http-token"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    proc = cli("serve", "--show-token", timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


# ---- types, as strict as the native host's ---------------------------------------------------

@pytest.mark.parametrize("budget", [True, "0.5"])
def test_a_budget_that_is_no_json_number_is_400_as_in_the_host(api, budget):
    """`true` became a $1 budget and "0.5" a number; the host takes neither."""
    status, body = api.curl("POST", "/workflows", json_body={"template": "page-text", "budget_usd": budget})
    assert status == 400 and body["error"]["field"] == "budget_usd"
    run_id = waiting_run(api)
    api.curl("POST", f"/workflows/{run_id}/cancel")
    status, body = api.curl("POST", f"/workflows/{run_id}/retry", json_body={"budget_usd": budget})
    assert status == 400 and body["error"]["field"] == "budget_usd"


def test_a_whole_number_budget_is_taken(api):
    status, _ = api.curl("POST", "/workflows", json_body={"template": "page-text", "budget_usd": 2})
    assert status == 201


@pytest.mark.parametrize("offset", [2**63, 10**20])
def test_an_offset_past_what_sqlite_counts_is_400_not_an_internal_error(api, offset):
    status, body = api.curl("GET", f"/workflows?offset={offset}")
    assert status == 400 and body["error"]["code"] == "bad_request" and "offset" in body["error"]["message"]


def test_the_largest_offset_sqlite_counts_is_an_empty_page(api):
    status, body = api.curl("GET", f"/workflows?offset={2**63 - 1}")
    assert status == 200 and body["runs"] == []
