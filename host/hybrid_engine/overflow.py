"""`on_overflow: map_reduce`: a model step whose prompt is longer than its model's context
splits, maps and reduces by itself, with no change to the template.

When the rendered prompt does not fit (context window from tokens.model_limits: the
table of documented windows, genai-prices, or `[models."<id>"] context_window` in
config.toml), the step's largest reference (the page's text, usually) is cut into parts
(split.py) that each fit with the rest of the prompt and the part's answer. The step
then grows, before itself:

    <id>~split      split_text, completed at once with the parts
    <id>~map        a for_each over them, whose parts <id>~map~1.. run the step's own
                    prompt with the part in place of the long value
and waits for <id>~map; when it runs, the long value is replaced by the parts' answers
in order (the reduce). Each part's answer is capped (its max_tokens) so that all of them
fit the reduce's prompt: a text so long that the cap would fall under
MIN_PART_ANSWER_TOKENS fails before anything is sent, saying so.

`plan` is pure and deterministic: the estimate calls it with the same inputs the run
will have, so it prices every part and the reduce before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import dag, safepath, split, tokens
from .errors import PermanentStepError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .store import Claimed, Expansion

MIN_PART_ANSWER_TOKENS = 64  # a part's answer shorter than this says too little to reduce
DEFAULT_PART_ANSWER_TOKENS = 1_000  # a part's answer cap when the step sets no max_tokens
SAFETY_SHARE = 0.03  # of the window, kept free: our count of another provider's tokens may be off
REDUCE_JOIN_TOKENS = 2  # the blank line between two answers in the reduce's prompt


@dataclass
class Plan:
    expr: str  # the reference that is split, e.g. steps.text.outputs.text
    parts: list[str]
    part_tokens: int
    overlap_tokens: int
    answer_tokens: int  # each part's max_tokens
    map_prompts: list[dict] = field(default_factory=list)  # filled by `expand` / the estimate


def _chat_count(prompt: str, system: str | None, model: str, provider: str) -> tokens.TokenCount:
    return tokens.count_chat_tokens(prompt, system, model, provider)


def plan(raw: dict, rendered: dict, provider: str, render_value: "Callable[[Any], Any]",
         config: dict | None = None) -> Plan | None:
    """How a step splits, or None when its prompt fits (or its context window is unknown)."""
    model = rendered.get("model")
    prompt = rendered.get("prompt")
    if not isinstance(model, str) or not isinstance(prompt, str):
        return None
    limits = tokens.model_limits(model, provider, config)
    window = limits.context_window
    if window is None:
        return None
    max_tokens = rendered.get("max_tokens") if isinstance(rendered.get("max_tokens"), int) else None
    budget = window - (max_tokens or 0)
    system = rendered.get("system") if isinstance(rendered.get("system"), str) else None
    if tokens.max_tokens_bound(prompt) + tokens.max_tokens_bound(system or "") + 16 <= budget:
        return None
    count = _chat_count(prompt, system, model, provider)
    if count.tokens <= budget:
        return None
    from .images import bytes_in_text

    found = bytes_in_text(prompt)
    if found:  # cut into parts, only the first would still show what it is: refused whole, as a prompt is
        raise PermanentStepError(f"the prompt holds {found}'s bytes as base64 text, which a model reads as tokens of "
                                 "nothing: read a PDF with an extract_text step first; give an image to a vision "
                                 "model with the step's `image` parameter", code="binary_in_prompt")
    # The reduce's own answer needs room too: max_tokens, or what a part's answer may take.
    reduce_budget = window - (max_tokens or min(DEFAULT_PART_ANSWER_TOKENS, window // 8))
    raw_prompt = raw.get("prompt")
    refs = [m.group(1).strip() for m in dag.REF_PATTERN.finditer(raw_prompt)] if isinstance(raw_prompt, str) else []
    sized = []
    for expr in dict.fromkeys(refs):
        text = safepath.as_text(render_value("{{ " + expr + " }}"))
        sized.append((tokens.count_tokens(text, model, provider).tokens, expr, text))
    if not sized:
        raise PermanentStepError(f"the prompt is about {count.tokens:,} tokens, over the {budget:,} {model} takes, "
                                 f"and has no reference to split: on_overflow: map_reduce splits a referenced text",
                                 code="context_overflow")
    _, expr, text = max(sized)
    uses = refs.count(expr)  # a prompt that names the text twice holds each part, and each answer, twice
    fixed = _chat_count(_without(raw_prompt, expr, render_value), system, model, provider).tokens
    margin = int(window * SAFETY_SHARE) + (0 if count.exact else int(window * tokens.APPROX_SLACK / 2))
    answer = min(max_tokens or DEFAULT_PART_ANSWER_TOKENS, max(MIN_PART_ANSWER_TOKENS, window // 8))
    encoding, _ = tokens.encoding_for(model, provider)
    for _ in range(3):
        part_tokens = (window - answer - fixed - margin) // uses
        if part_tokens < split.MIN_PART_TOKENS * 2:
            raise PermanentStepError(
                f"the rest of the prompt leaves no room for a part of the text in {model}'s {window:,}-token "
                f"context window; shorten the prompt or choose a model with a larger window", code="context_overflow")
        overlap = min(split.DEFAULT_OVERLAP_TOKENS, part_tokens // 10)
        parts = split.split_text(text, part_tokens, overlap, encoding)
        room = reduce_budget - fixed - margin - len(parts) * REDUCE_JOIN_TOKENS * uses
        if len(parts) * answer * uses <= room:
            return Plan(expr, parts, part_tokens, overlap, answer)
        answer = room // (len(parts) * uses)
        if answer < MIN_PART_ANSWER_TOKENS:
            break
    raise PermanentStepError(
        f"the text in {{{{ {expr} }}}} is too long to map and reduce in one round with {model}: "
        f"{len(parts)} parts would leave under {MIN_PART_ANSWER_TOKENS} tokens for each part's answer in the "
        f"reduce's {window:,}-token context window. Choose a model with a larger window.", code="context_overflow")


def _without(raw_prompt: str, expr: str, render_value: "Callable[[Any], Any]") -> str:
    """The prompt with every other reference rendered and the split one left out."""
    def one(m):
        return "" if m.group(1).strip() == expr else safepath.as_text(render_value(m.group(0)))
    return dag.REF_PATTERN.sub(one, raw_prompt)


def _replace_ref(params: dict, expr: str, replacement: str) -> dict:
    """The params with the split reference (in the prompt) replaced by another reference."""
    out = dict(params)
    out.pop("on_overflow", None)  # the parts and the reduce fit by construction; if not, they fail
    out["prompt"] = dag.REF_PATTERN.sub(
        lambda m: "{{ " + replacement + " }}" if m.group(1).strip() == expr else m.group(0), params["prompt"])
    return out


def expansion(step_id: str, action: str, raw: dict, deps: list[str], p: Plan) -> "Expansion":
    """The rows the step grows for plan `p`, and its own params as the reduce."""
    from . import fanout
    from .states import StepStatus
    from .store import ExpandedStep, NewStep

    split_id, map_id = f"{step_id}{fanout.PART_MARK}split", f"{step_id}{fanout.PART_MARK}map"
    part_params = {**_replace_ref(raw, p.expr, "item"), "max_tokens": p.answer_tokens}
    spec = {"for_each": "{{ steps." + split_id + ".outputs.parts }}", "action": action, "name": f"{step_id} (map)",
            "params": part_params}
    split_row = ExpandedStep(NewStep(
        step_id=split_id, name=f"{step_id} (split)", action="split_text", provider=None,
        params={"text": "{{ " + p.expr + " }}", "part_tokens": p.part_tokens, "overlap_tokens": p.overlap_tokens},
        deps=list(deps), status=StepStatus.COMPLETED, max_retries=0, timeout_s=None),
        outputs={"parts": p.parts, "count": len(p.parts)})
    grown = fanout.fan_out(map_id, spec, p.parts, [split_id])
    gather = ExpandedStep(NewStep(
        step_id=map_id, name=f"{step_id} (map)", action=fanout.FOR_EACH, provider=None, params=spec,
        deps=grown.parent_deps, status=StepStatus.PENDING, max_retries=0, timeout_s=None))
    from .store import Expansion

    return Expansion(
        rows=[split_row, *grown.rows, gather], parent_deps=list(deps) + [map_id],
        parent_params=_replace_ref(raw, p.expr, f"steps.{map_id}.outputs.text"),
        log=(f"on_overflow: map_reduce: the prompt is over {step_id}'s context window; {{{{ {p.expr} }}}} split "
             f"into {len(p.parts)} parts of at most {p.part_tokens:,} tokens ({map_id}~1 to "
             f"{map_id}~{len(p.parts)}, answers capped at {p.answer_tokens:,} tokens), then reduced here"))


def check(c: "Claimed", raw: dict, rendered: dict, deps: list[str], render_value: "Callable[[Any], Any]") -> None:
    """Raise fanout.Expand when the claimed step's prompt does not fit its model."""
    from . import fanout
    from .adapters import SPECS
    from .config import load_config

    try:
        config = load_config()
    except Exception:  # noqa: BLE001 - the adapter reports a bad config.toml when it runs
        config = {}
    p = plan(raw, rendered, SPECS[c.action].provider, render_value, config)
    if p is not None:
        raise fanout.Expand(expansion(c.step_id, c.action, raw, deps, p))


__all__ = ["Plan", "plan", "expansion", "check", "MIN_PART_ANSWER_TOKENS", "DEFAULT_PART_ANSWER_TOKENS"]
