"""split_text: token-sized parts at paragraph boundaries, with overlap, the same every time."""

from __future__ import annotations

import pytest

from hybrid_engine import tokens
from hybrid_engine.split import SplitError, split_text


def n(text: str) -> int:
    return len(tokens.encode(text))


def paragraphs(count: int, words: int = 40) -> list[str]:
    return [f"Paragraph {i} " + " ".join(f"w{i}x{j}" for j in range(words)) + "." for i in range(count)]


def test_parts_fit_the_token_size_and_hold_every_paragraph_in_order():
    paras = paragraphs(30)
    parts = split_text("\n\n".join(paras), part_tokens=400, overlap_tokens=0)
    assert len(parts) > 3
    assert all(n(p) <= 400 for p in parts)
    assert "\n\n".join(parts).split("\n\n") == paras  # no overlap: the parts are the text, cut at paragraphs


def test_consecutive_parts_share_whole_paragraphs_up_to_the_overlap():
    paras = paragraphs(30, words=10)
    parts = split_text("\n\n".join(paras), part_tokens=300, overlap_tokens=80)
    for before, after in zip(parts, parts[1:]):
        shared = [p for p in after.split("\n\n") if p in before.split("\n\n")]
        assert shared and after.startswith("\n\n".join(shared))  # whole paragraphs, at the start
        assert n("\n\n".join(shared)) <= 80


def test_a_paragraph_longer_than_a_part_is_cut_at_sentence_ends():
    sentences = [f"Sentence {i} says " + " ".join(f"s{i}w{j}" for j in range(20)) + "." for i in range(40)]
    parts = split_text(" ".join(sentences), part_tokens=200, overlap_tokens=0)
    assert len(parts) > 3 and all(n(p) <= 200 for p in parts)
    assert all(p.endswith(".") for p in parts)
    assert " ".join(parts) == " ".join(sentences)


def test_a_sentence_longer_than_a_part_is_cut_between_words():
    words = [f"word{i}" for i in range(2000)]
    parts = split_text(" ".join(words), part_tokens=150, overlap_tokens=0)
    assert len(parts) > 5 and all(n(p) <= 150 for p in parts)
    assert " ".join(parts).split() == words  # no word was cut in two


@pytest.mark.parametrize("number", ["4111 1111 1111 1111", "+44 20 7946 0958", "4111-1111-1111-1111"])
def test_a_cut_between_words_never_falls_inside_a_card_or_phone_number(number):
    """Redaction sees one part at a time: a number cut in two would reach the model in halves."""
    for pad in range(75, 100):
        text = "word " * pad + f"pay {number} then " + "more words here " * 60
        parts = split_text(text, part_tokens=100, overlap_tokens=0)
        assert sum(number in p for p in parts) >= 1, (pad, parts)


def test_a_run_without_spaces_is_cut_by_tokens():
    blob = "QUJD" * 5000
    parts = split_text(blob, part_tokens=100, overlap_tokens=0)
    assert len(parts) > 5 and all(n(p) <= 100 for p in parts)
    assert "".join(parts) == blob


def test_the_same_text_gives_the_same_parts():
    text = "\n\n".join(paragraphs(50))
    assert split_text(text, 500, 100) == split_text(text, 500, 100)


def test_blank_text_gives_no_parts():
    assert split_text("  \n\n ", 500, 50) == []


@pytest.mark.parametrize("part, overlap", [(10, 0), (400, 300), (400, -1)])
def test_sizes_that_cannot_make_parts_are_refused(part, overlap):
    with pytest.raises(SplitError):
        split_text("text", part, overlap)


def test_text_without_sentence_or_paragraph_breaks_still_overlaps_at_the_seam():
    words = [f"word{i}" for i in range(2000)]
    parts = split_text(" ".join(words), part_tokens=150, overlap_tokens=30)
    assert len(parts) > 5 and all(n(p) <= 150 for p in parts)
    for before, after in zip(parts, parts[1:]):
        first = after.split()[0]
        assert first in before.split()  # the next part starts inside the one before
        assert n(before[before.rindex(first):]) <= 30


def test_cutting_a_long_run_without_spaces_encodes_each_character_a_bounded_number_of_times(monkeypatch):
    """Each part cut by tokens used to encode the whole rest of the run: quadratic, 9 s for
    264k characters of Chinese without punctuation, in the popup's estimate too."""
    from hybrid_engine import split

    text = "这是一个很长的中文句子没有空格也没有标点符号" * 2000  # 44,000 characters, one run
    encoded = []
    real = tokens.encode

    def counting(t, *args, **kwargs):
        encoded.append(len(t))
        return real(t, *args, **kwargs)

    monkeypatch.setattr(split.tokens, "encode", counting)
    parts = split_text(text, part_tokens=200, overlap_tokens=0)
    assert "".join(parts) == text and len(parts) > 50
    assert sum(encoded) <= 10 * len(text)
