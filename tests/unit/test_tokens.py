"""Offline token counts and estimates against OpenAI's own tokenizer (tiktoken, o200k_base).

The acceptance bar is 15% on the sample pages after text extraction; Hybrid Engine
counts with the same vocabulary, so the expected error is 0 for OpenAI models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tiktoken_reference
from hybrid_engine import tokens
from hybrid_engine.adapters import load_action

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "corpus" / "readability"


def sample_pages() -> list[Path]:
    """Every page of the corpus kept in the repository (English, German, Spanish, Chinese,
    Japanese, right-to-left) and the sample page."""
    return sorted(CORPUS.glob("*/source.html")) + [ROOT / "examples" / "sample-page.html"]


def extract(html: str) -> str:
    try:
        from hybrid_engine.extract import extract_main
    except ImportError:  # the engine's extraction is not there: trafilatura directly
        import trafilatura

        return trafilatura.extract(html, output_format="markdown", include_tables=True) or ""
    return extract_main(html)["text"]


@pytest.fixture(autouse=True)
def _home(he_home):
    return he_home


@pytest.fixture(scope="module")
def reference():
    return tiktoken_reference.o200k()


PAGES = sample_pages()


def test_estimates_are_within_15_percent_of_o200k_on_sample_pages(reference):
    estimate = load_action("openai_chat").estimate
    worst = 0.0
    rows = []
    for page in PAGES:
        text = extract(page.read_text(encoding="utf-8", errors="replace"))
        if not text.strip():
            continue
        prompt = "Summarise this page in 5 bullets:\n\n" + text
        expected = len(reference.encode_ordinary(prompt)) + tokens.TOKENS_PER_MESSAGE + tokens.REPLY_PRIMING
        got = estimate({"model": "gpt-4o-mini", "prompt": prompt})["prompt_tokens"]
        error = abs(got - expected) / expected
        rows.append((page.parent.name, expected, got))
        worst = max(worst, error)
    assert len(rows) == len(PAGES) == 12
    assert worst <= 0.15, rows
    assert worst == 0.0  # same vocabulary, same splitting: exact


def test_other_providers_get_a_range_around_the_o200k_count(reference):
    text = extract(PAGES[0].read_text(encoding="utf-8", errors="replace"))
    expected = len(reference.encode_ordinary(text)) + tokens.TOKENS_PER_MESSAGE + tokens.REPLY_PRIMING
    for action, model in [("gemini_chat", "gemini-2.5-flash"), ("deepseek_chat", "deepseek-chat")]:
        est = load_action(action).estimate({"model": model, "prompt": text})
        assert est["prompt_tokens"] == expected and est["exact"] is False
        assert est["prompt_tokens_min"] < expected < est["prompt_tokens_max"]


@pytest.mark.parametrize("text", [
    "", "hello world", "Ünïcödé façade — naïve café", "日本語のテキストと中文字符",
    "def f(x):\n    return x ** 2  # code\n\n\n", "🙂 emoji 👩‍👩‍👧 and URLs https://example.com/a?b=c",
    "Numbers 1234567890 and 3.14159, dates 2026-03-02",
])
def test_counts_match_tiktoken_exactly(reference, text):
    assert tokens.count_tokens(text, "gpt-4o", "openai").tokens == len(reference.encode_ordinary(text))


def test_long_runs_without_spaces_are_counted_close(reference):
    """Their time is bench/tokens.py's."""
    blob = "QmFzZTY0" * 25_000 + " end"  # 200 kB of base64-like text in one "word"
    got = tokens.count_tokens(blob, "gpt-4o", "openai").tokens
    expected = len(reference.encode_ordinary(blob))
    assert abs(got - expected) / expected < 0.05


def test_truncate_keeps_a_prefix_within_the_budget(reference):
    text = " ".join(f"Paragraph {i}: 東京 and Zürich." for i in range(500))
    kept, kept_tokens, total = tokens.truncate(text, 300)
    assert text.startswith(kept) and kept_tokens == 300
    assert len(reference.encode_ordinary(kept)) <= 300
    assert total == len(reference.encode_ordinary(text))
    assert tokens.truncate("short", 300) == ("short", 1, 1)


def test_heuristic_fallback_is_labelled(monkeypatch):
    monkeypatch.setattr(tokens, "_encoders", {tokens.O200K: tokens._UNAVAILABLE})
    tokens._count.cache_clear()
    try:
        count = tokens.count_tokens("some words " * 100, "gpt-4o", "openai")
        assert count.method == "heuristic" and count.exact is False
        assert count.low < count.tokens < count.high
    finally:
        tokens._count.cache_clear()


def test_model_limits_table_genai_prices_and_config(write_config):
    assert tokens.model_limits("gpt-4o-mini", "openai").context_window == 128_000
    assert tokens.model_limits("gemini-2.5-flash", "gemini").context_window == 1_048_576
    assert tokens.model_limits("deepseek-chat", "deepseek").max_output_tokens == 8_192
    assert tokens.model_limits("llama3.1", "local").context_window is None
    write_config('[models."llama3.1"]\ncontext_window = 8192\nmax_output_tokens = 1024\n')
    limits = tokens.model_limits("llama3.1", "local")
    assert (limits.context_window, limits.max_output_tokens, limits.source) == (8192, 1024, "config")


def test_estimate_shape_and_cost_range():
    est = load_action("openai_chat").estimate({"model": "gpt-4o-mini", "prompt": "word " * 1000,
                                               "max_tokens": 400})
    for key in ("provider", "model", "prompt_tokens", "max_output_tokens", "cost_min", "cost_max",
                "price_unknown"):
        assert key in est
    assert est["provider"] == "openai" and est["max_output_tokens"] == 400 and est["exact"] is True
    assert est["cost_min"] == pytest.approx(est["prompt_tokens"] * 0.15 / 1e6)
    assert est["cost_max"] == pytest.approx(est["prompt_tokens"] * 0.15 / 1e6 + 400 * 0.6 / 1e6)
    unknown = load_action("openai_chat").estimate({"model": "my-finetune", "prompt": "x"})
    assert unknown["cost_min"] is None and unknown["cost_max"] is None and unknown["price_unknown"]
    local = load_action("local_chat").estimate({"model": "llama3.1", "prompt": "x"})
    assert local["cost_max"] == 0.0 and local["price_unknown"] is False


def test_estimate_flags_a_prompt_over_the_context_window(write_config):
    write_config('[models."gpt-4o-mini"]\ncontext_window = 1000\n')
    action = load_action("openai_chat")
    over = action.estimate({"model": "gpt-4o-mini", "prompt": "word " * 3000})
    assert over["fits"] is False and over["context_window"] == 1000
    cut = action.estimate({"model": "gpt-4o-mini", "prompt": "word " * 3000, "on_overflow": "truncate",
                           "max_tokens": 100})
    assert cut["prompt_tokens_max"] <= 900


def test_the_tokenizer_cache_stays_bounded_over_many_distinct_pages(monkeypatch):
    monkeypatch.setattr(tokens, "CACHE_KEEP", 10_000)

    def word(n: int) -> str:  # letters only: one pre-token per word, each one new
        return "".join("abcdefghijklmnopqrstuvwxyz"[n // 26 ** i % 26] for i in range(5))

    enc = tokens._encoder(tokens.O200K)
    for page in range(40):  # 40 pages of 2,000 words never seen before
        tokens.encode(" ".join(word(page * 2000 + n) for n in range(2000)))
    assert len(enc._cache) <= 10_000  # 80,000 new words went through it
    tokens.encode("and it still caches")
    assert len(enc._cache) > 0
