"""Search words as an FTS5 query: every word quoted, so nothing a user types is syntax."""

from __future__ import annotations

import sqlite3

import pytest

from hybrid_engine.pagetitle import html_title
from hybrid_engine.pageurl import safe_favicon, site_of, url_key
from hybrid_engine.store import fts_query


def test_every_word_is_quoted_as_a_prefix_and_quotes_are_doubled():
    assert fts_query('lava "cools" AND a"b') == '"lava"* """cools"""* "AND"* "a""b"*'


def test_words_without_a_letter_or_digit_are_left_out():
    assert fts_query('" * - ( ) ^ :') is None
    assert fts_query("- lava") == '"lava"*'


@pytest.mark.parametrize("text", ['"', "*", "AND", "OR", "NOT", "NEAR(a b)", "a:b", "(", ")", "^x", "-x", "x*y",
                                  '"unterminated', "{a b}: c", "a + b", "\\", "'", "\x00", "ü", "😀"])
def test_no_typed_text_makes_sqlite_fail(text):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO t VALUES ('lava cools')")
    query = fts_query(text)
    if query is not None:
        conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (query,)).fetchone()


def test_a_nul_inside_a_word_separates_words_instead_of_failing_sqlite():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    conn.execute("INSERT INTO t VALUES ('lava cools')")
    query = fts_query("lava\x00cool")
    assert query == '"lava"* "cool"*'
    assert conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (query,)).fetchone()[0] == 1


def test_the_site_is_the_host_without_www_port_or_credentials():
    assert site_of("https://user:pw@WWW.Example.org:8443/a?b#c") == "example.org"
    assert site_of("http://news.example.com/") == "news.example.com"
    assert site_of("not a url") is None and site_of(None) is None and site_of("http://[::1") is None


def test_the_url_key_drops_only_the_fragment():
    assert url_key("https://a.example/p?q=1#top") == "https://a.example/p?q=1"


@pytest.mark.parametrize("value, kept", [
    ("https://a.example/favicon.ico", True), ("http://a.example/f.png", True),
    ("data:image/png;base64,iVBOR", True), ("data:image/svg+xml,<svg/>", True),
    ("javascript:alert(1)", False), ("data:text/html,<b>", False), ("file:///x.png", False),
    ("chrome://favicon/x", False), ("https://", False), ("data:image/png", False),
    ("https://a.example/x\" onerror=\"y", False), ("x" * 20000, False), (None, False), (3, False)])
def test_a_favicon_is_kept_only_when_it_is_a_small_http_or_data_image_url(value, kept):
    assert safe_favicon(value) == (value if kept else None)


def test_a_page_without_a_given_title_is_named_by_its_html_title_as_text():
    assert html_title("<html><head><TITLE lang=en>\n Tide &amp; <b>time</b>\n</TITLE></head>") == "Tide & time"
    assert html_title("<p>no title</p>") is None and html_title("<title>  </title>") is None
    assert len(html_title("<title>" + "x" * 1000 + "</title>")) == 300
