"""Cutting a long text into parts that each fit a model's context, for map-reduce.

Parts are cut at paragraph boundaries (a blank line); a paragraph longer than a part is
cut at sentence ends, a sentence longer than a part between words, and a run without
spaces longer than a part (a base64 blob) by tokens. Consecutive parts share up to
`overlap_tokens` of whole pieces at the seam, so a point made across a boundary is seen
whole by at least one part. The same text and settings always give the same parts: a
retried or recovered fan-out sees the parts it was planned with.

Token counts are the project's offline BPE (tokens.py). A piece is counted with the
whitespace in front of it, which is how the BPE pre-tokenizer splits it in context, so a
part's count is the sum of its pieces' counts to within a token or two; every part is
then counted whole and, in the rare case it is over, cut again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import tokens

DEFAULT_PART_TOKENS = 2_000
DEFAULT_OVERLAP_TOKENS = 100
MIN_PART_TOKENS = 50  # below this a part holds a sentence or two: not worth a model call

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"'\u201d\u2019)\]]*\s+")
_SPACE = re.compile(r"\s+")
# Card and phone numbers written in groups: never cut between their groups, since redaction
# sees one part at a time and would miss a number that reaches it in halves.
_NUMBER = re.compile(r"\+?\d(?:[ \u00a0\u2007\u2009\u202f.()-]{0,2}\d){8,18}(?!\d)")


class SplitError(ValueError):
    """Settings that cannot produce parts (a part smaller than the overlap, ...)."""


@dataclass(frozen=True)
class _Piece:
    start: int  # the piece's span in the text, its leading whitespace included
    end: int
    tokens: int
    seam: bool  # a paragraph boundary precedes it


def _spans(text: str, pattern: re.Pattern, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) cut before every match's last whitespace run, so each span after the
    first begins with the whitespace that separates it from the one before."""
    out, at = [], start
    for m in pattern.finditer(text, start, end):
        cut = m.start() + len(m.group().rstrip()) if m.group().strip() else m.start()
        if cut > at:
            out.append((at, cut))
            at = cut
    if at < end:
        out.append((at, end))
    return out


def _count(text: str, encoding: str) -> int:
    ids = tokens.encode(text, encoding)
    return len(ids) if ids is not None else tokens.heuristic_tokens(text)


def _hard_cut(text: str, start: int, end: int, limit: int, encoding: str) -> list[_Piece]:
    """A run with no usable boundary, cut into pieces of at most `limit` tokens.

    Each piece is cut from a window of the run a few times its size (widened while it holds
    fewer than `limit` tokens), not from all the rest of it: encoding the rest for every
    piece made a long run quadratic."""
    pieces = []
    window = limit * 4  # characters: room for `limit` tokens of most text (~4 chars each in English, ~1 in Chinese)
    while start < end:
        stop_at = min(end, start + window)
        kept, n, total = tokens.truncate(text[start:stop_at], limit, encoding)
        if total <= limit and stop_at < end:
            window *= 2
            continue
        stop = start + max(1, len(kept))
        pieces.append(_Piece(start, stop, _count(text[start:stop], encoding), False))
        start = stop
    return pieces


def _pieces(text: str, limit: int, encoding: str, grain: int) -> list[_Piece]:
    """The text as paragraphs, with any paragraph over `limit` cut finer; words are grouped
    by at most `grain` tokens, so that a text without sentence ends still has pieces small
    enough to repeat as the overlap."""
    out: list[_Piece] = []
    for p_start, p_end in _spans(text, _PARAGRAPH_BREAK, 0, len(text)):
        n = _count(text[p_start:p_end], encoding)
        if n <= limit:
            out.append(_Piece(p_start, p_end, n, True))
            continue
        first = True
        for s_start, s_end in _spans(text, _SENTENCE_END, p_start, p_end):
            n = _count(text[s_start:s_end], encoding)
            if n <= limit:
                out.append(_Piece(s_start, s_end, n, first))
            else:
                for w_start, w_end in _words(text, s_start, s_end, limit, encoding, grain):
                    out.append(_Piece(w_start, w_end, _count(text[w_start:w_end], encoding), first))
                    first = False
                continue
            first = False
    return [p for p in out if text[p.start:p.end].strip()]


def _words(text: str, start: int, end: int, limit: int, encoding: str, grain: int) -> list[tuple[int, int]]:
    """Groups of whole words of at most `grain` tokens (a word over that is a group of its
    own); a single word over `limit` is cut by tokens."""
    groups: list[tuple[int, int]] = []
    g_start, g_tokens = start, 0
    for w_start, w_end in _whole_numbers(text, _spans(text, _SPACE, start, end), start, end):
        n = _count(text[w_start:w_end], encoding)
        if n > limit:
            if g_start < w_start:
                groups.append((g_start, w_start))
            groups += [(p.start, p.end) for p in _hard_cut(text, w_start, w_end, limit, encoding)]
            g_start, g_tokens = w_end, 0
            continue
        if g_tokens + n > grain and g_start < w_start:
            groups.append((g_start, w_start))
            g_start, g_tokens = w_start, 0
        g_tokens += n
    if g_start < end:
        groups.append((g_start, end))
    return groups


def _whole_numbers(text: str, spans: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """`spans` with those that begin inside a grouped number joined to the one before."""
    inside = [(m.start(), m.end()) for m in _NUMBER.finditer(text, start, end) if _SPACE.search(m.group())]
    if not inside:
        return spans
    out: list[tuple[int, int]] = []
    k = 0
    for s_start, s_end in spans:
        while k < len(inside) and inside[k][1] <= s_start:
            k += 1
        if out and k < len(inside) and inside[k][0] < s_start:
            out[-1] = (out[-1][0], s_end)
        else:
            out.append((s_start, s_end))
    return out


def split_text(text: str, part_tokens: int = DEFAULT_PART_TOKENS, overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
               encoding: str = tokens.O200K) -> list[str]:
    """The text in parts of at most `part_tokens` tokens each, consecutive parts sharing up to
    `overlap_tokens` at the seam. Empty or blank text gives no parts."""
    if part_tokens < MIN_PART_TOKENS:
        raise SplitError(f"a part must hold at least {MIN_PART_TOKENS} tokens, not {part_tokens}")
    if overlap_tokens < 0 or overlap_tokens * 2 > part_tokens:
        raise SplitError(f"the overlap ({overlap_tokens} tokens) must be between 0 and half a part "
                         f"({part_tokens // 2} tokens)")
    if not text.strip():
        return []
    pieces = _pieces(text, part_tokens, encoding, overlap_tokens or part_tokens)
    parts: list[str] = []
    i = 0
    carry: list[_Piece] = []  # the previous part's tail, repeated at the start of this one
    while i < len(pieces):
        group = list(carry)
        used = sum(p.tokens for p in group)
        start_i = i
        while i < len(pieces) and (used + pieces[i].tokens <= part_tokens or i == start_i):
            if used + pieces[i].tokens > part_tokens:  # the overlap left no room for new text
                group, used = [], 0
            group.append(pieces[i])
            used += pieces[i].tokens
            i += 1
        part = text[group[0].start:group[-1].end].strip()
        while _count(part, encoding) > part_tokens and i - 1 > start_i and group[-1] not in carry:
            group.pop()  # counted whole it is over: cross-piece merges, rare
            i -= 1
            part = text[group[0].start:group[-1].end].strip()
        parts.append(part)
        carry = _tail(group, overlap_tokens) if i < len(pieces) else []
    return parts


def _tail(group: list[_Piece], overlap_tokens: int) -> list[_Piece]:
    """The last whole pieces of a part that fit the overlap, from its last paragraph
    boundary on when one is inside it (the overlap starts at a paragraph where it can)."""
    tail: list[_Piece] = []
    used = 0
    for p in reversed(group[1:]):
        if used + p.tokens > overlap_tokens:
            break
        tail.insert(0, p)
        used += p.tokens
    seams = [k for k, p in enumerate(tail) if p.seam]
    return tail[seams[0]:] if seams else tail


__all__ = ["split_text", "SplitError", "DEFAULT_PART_TOKENS", "DEFAULT_OVERLAP_TOKENS", "MIN_PART_TOKENS"]
