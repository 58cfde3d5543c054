"""extract_main keeps its last few results: the popup estimates the same page again and
again (reopened, another workflow chosen), and extraction is most of an estimate's time."""

from __future__ import annotations

from hybrid_engine import extract

PAGE = ("<html><head><title>Tides</title></head><body><nav><a href='/'>Home</a></nav><article><h1>Tides</h1>"
        + "<p>The tide rises and falls twice a day along most of the coast, pulled by the moon.</p>" * 20
        + "</article></body></html>")


def _counting(monkeypatch) -> list:
    calls = []
    real = extract._extract

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(extract, "_extract", counted)
    monkeypatch.setattr(extract, "_cache", type(extract._cache)())
    return calls


def test_the_same_page_extracted_again_comes_from_the_cache_equal(monkeypatch):
    calls = _counting(monkeypatch)
    first = extract.extract_main(PAGE, "https://example.org/tides")
    again = extract.extract_main(PAGE, "https://example.org/tides")
    assert again == first and "tide rises" in again["text"]
    assert len(calls) == 1


def test_a_result_changed_by_its_caller_does_not_change_the_cached_one(monkeypatch):
    _counting(monkeypatch)
    first = extract.extract_main(PAGE)
    first["text"] = "changed"
    assert extract.extract_main(PAGE)["text"] != "changed"


def test_another_url_article_or_option_is_extracted_anew(monkeypatch):
    calls = _counting(monkeypatch)
    extract.extract_main(PAGE, "https://example.org/a")
    extract.extract_main(PAGE, "https://example.org/b")
    extract.extract_main(PAGE, "https://example.org/b", article="<p>The tide rises.</p>")
    extract.extract_main(PAGE, "https://example.org/b", include_links=True)
    assert len(calls) == 4


def test_the_cache_keeps_only_the_newest_pages(monkeypatch):
    calls = _counting(monkeypatch)
    pages = [PAGE.replace("Tides", f"Tides {i}") for i in range(extract._CACHE_ENTRIES + 1)]
    for page in pages:
        extract.extract_main(page)
    extract.extract_main(pages[-1])  # still kept
    extract.extract_main(pages[0])  # dropped as the oldest: extracted again
    assert len(calls) == len(pages) + 1
