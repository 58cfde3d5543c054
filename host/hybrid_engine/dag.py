"""The graph of a workflow: validation, ancestry checks, and single-pass rendering.

Rendering is one pass over the template text: each `{{ ... }}` is replaced by a
value looked up from completed upstream outputs, and the replacement is never
scanned again. Captured pages are untrusted text; a page that contains
`{{ steps.x.outputs.y }}` must reach the model verbatim, not be expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import safepath

REF_PATTERN = re.compile(r"\{\{\s*((?:(?!\}\}).)*?)\s*\}\}", re.S)  # one reference: no "}}" inside
# A step id in a reference may hold '~', which no template step id does: the steps a run
# grows (the parts of a fan-out, fanout.py) are named with it, and only the engine refers to them.
_STEP_REF = re.compile(r"^steps\.([A-Za-z_][A-Za-z0-9_~-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)$")
RUN_FIELDS = ("id", "name", "template", "created_at")
_RUN_REF = re.compile(r"^run\.(" + "|".join(RUN_FIELDS) + r")$")
# In a step with `for_each`: the item it runs on, its number (from 1) and how many there are.
ITEM_FIELDS = ("item", "item_number", "item_count")


@dataclass(frozen=True)
class Ref:
    kind: str  # "step", "run" or "item"
    step: str | None
    key: str
    path: tuple[str, ...] = ()


class RefError(ValueError):
    pass


def parse_ref(expr: str) -> Ref:
    m = _STEP_REF.match(expr)
    if m:
        path = tuple(p for p in m.group(3).split(".") if p)
        return Ref("step", m.group(1), m.group(2), path)
    m = _RUN_REF.match(expr)
    if m:
        return Ref("run", None, m.group(1))
    if expr in ITEM_FIELDS:
        return Ref("item", None, expr)
    raise RefError(f"'{{{{ {expr} }}}}' is not a reference: use {{{{ steps.<id>.outputs.<key> }}}}, "
                   f"{{{{ run.<{'|'.join(RUN_FIELDS)}> }}}} or, in a for_each step, "
                   f"{{{{ <{'|'.join(ITEM_FIELDS)}> }}}}")


def refs_in(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """Yield (field path, expression) for every `{{ ... }}` in a params structure. (Recursive
    itself: a nested recursive function is a reference cycle, left for the garbage collector
    at every call, which is at every step of a template checked and of a run rendered.)"""
    if isinstance(value, str):
        for m in REF_PATTERN.finditer(value):
            yield path, m.group(1)
    elif isinstance(value, dict):
        for k, sub in value.items():
            yield from refs_in(sub, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from refs_in(sub, f"{path}[{i}]")


def referenced_steps(params: dict) -> set[str]:
    out = set()
    for _, expr in refs_in(params):
        try:
            ref = parse_ref(expr)
        except RefError:
            continue
        if ref.kind == "step":
            out.add(ref.step)
    return out


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a list of ids (first == last), or None. Iterative: templates can be long."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    for root in graph:
        if colour[root] != WHITE:
            continue
        stack = [(root, iter(graph[root]))]
        colour[root] = GREY
        path = [root]
        while stack:
            node, it = stack[-1]
            for dep in it:
                if dep not in colour:
                    continue
                if colour[dep] == GREY:
                    return path[path.index(dep):] + [dep]
                if colour[dep] == WHITE:
                    colour[dep] = GREY
                    stack.append((dep, iter(graph[dep])))
                    path.append(dep)
                    break
            else:
                colour[node] = BLACK
                stack.pop()
                path.pop()
    return None


def missing_ancestors(graph: dict[str, list[str]], wanted: dict[str, set[str]]) -> dict[str, set[str]]:
    """For each node of an acyclic graph, the members of `wanted[node]` that are not among
    its transitive dependencies.

    A set of every ancestor per node grows with the square of a chain's length (12.5
    million entries for 5,000 steps). Here a wanted direct dependency costs one set lookup; only the
    distinct nodes wanted from further up get a bit, and each node carries one integer of
    those bits, the OR of its dependencies' (word-parallel), dropped once its last
    dependent has read it. Work is steps + edges when references name direct dependencies,
    and (steps + edges) x bits/64 words otherwise.
    """
    far: dict[str, int] = {}  # wanted from beyond a direct dependency -> its bit
    for node, targets in wanted.items():
        direct = graph.get(node, ())
        for t in targets:
            if t not in far and t in graph and t not in direct:
                far[t] = len(far)
    missing: dict[str, set[str]] = {}
    if not far:
        for node, targets in wanted.items():
            direct = set(graph.get(node, ()))
            gone = {t for t in targets if t not in direct}
            if gone:
                missing[node] = gone
        return missing
    readers = {n: 0 for n in graph}  # dependents that have not yet read a node's bits
    for deps in graph.values():
        for d in deps:
            if d in readers:
                readers[d] += 1
    bits: dict[str, int] = {}
    for node in topological_order(graph):
        acc = 0
        for d in graph[node]:
            if d not in readers:
                continue
            acc |= bits[d]
            if d in far:
                acc |= 1 << far[d]
            readers[d] -= 1
            if readers[d] == 0:
                del bits[d]
        targets = wanted.get(node)
        if targets:
            gone = {t for t in targets if t not in far or not acc >> far[t] & 1}
            gone.difference_update(graph[node])
            if gone:
                missing[node] = gone
        if readers[node]:
            bits[node] = acc
    return missing


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    indeg = {n: 0 for n in graph}
    dependents: dict[str, list[str]] = {n: [] for n in graph}
    for node, deps in graph.items():
        for d in deps:
            if d in graph:
                indeg[node] += 1
                dependents[d].append(node)
    ready = [n for n in graph if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for m in dependents[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    return order


class RenderError(ValueError):
    pass


def render(value: Any, lookup: Callable[[Ref], Any]) -> Any:
    """Render a params structure in one pass.

    A string that is exactly one reference takes the referenced value as it is (a
    number stays a number); otherwise references are spliced in as text.
    """
    if isinstance(value, str):
        m = REF_PATTERN.fullmatch(value)
        if m:
            return lookup(parse_ref(m.group(1)))
        if "{{" not in value:
            return value
        return REF_PATTERN.sub(lambda mm: safepath.as_text(lookup(parse_ref(mm.group(1)))), value)
    if isinstance(value, dict):
        return {k: render(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, lookup) for v in value]
    return value


def render_path(raw: Any, lookup: Callable[[Ref], Any], tag_seed: str | None) -> Any:
    """A path param: the template's text keeps its meaning, each value is one safe name piece.

    Separators, `..`, `~` and absolute paths can therefore only come from the template.
    When `tag_seed` is given, the last piece that came from a step's outputs gets a tag
    unique to that seed (before the template's own `.md`), so two pages with the same
    title land in two files.
    """
    if not isinstance(raw, str):
        return raw  # the action reports the wrong type
    problem = safepath.template_problem(raw, REF_PATTERN)
    if problem:
        raise RenderError(problem)
    out: list[str] = []
    last_data = -1
    at = 0
    budgets = safepath.piece_budgets(raw, REF_PATTERN)
    for i, m in enumerate(REF_PATTERN.finditer(raw)):
        ref = parse_ref(m.group(1))
        room = budgets[i] if i < len(budgets) else safepath.MAX_PIECE_BYTES
        out += [raw[at:m.start()], safepath.name_piece(lookup(ref), room)]
        if ref.kind == "step":
            last_data = len(out) - 1
        at = m.end()
    out.append(raw[at:])
    if last_data >= 0 and tag_seed:
        out[last_data] = safepath.tagged(out[last_data], tag_seed)
    return "".join(out)


def render_params(params: dict, lookup: Callable[[Ref], Any], paths: dict[str, str | None],
                  tag_seed: str) -> dict:
    """A step's params; `paths` (ActionSpec.path_params) are rendered by render_path."""
    if not paths:
        return render(params, lookup)
    out = render({k: v for k, v in params.items() if k not in paths}, lookup)
    for key, shared_by in paths.items():
        if key in params:
            shared = shared_by is not None and out.get(shared_by) is True
            try:
                out[key] = render_path(params[key], lookup, None if shared else tag_seed)
            except RenderError as exc:
                raise RenderError(f"params.{key}: {exc}") from exc
    return out


def make_lookup(outputs: dict[str, dict], run: dict) -> Callable[[Ref], Any]:
    def lookup(ref: Ref) -> Any:
        if ref.kind == "run":
            return run.get(ref.key)
        if ref.kind == "item":  # a for_each step's parts have theirs written in (fanout.py)
            raise RenderError(f"{{{{ {ref.key} }}}} is defined only in a step with for_each")
        step_out = outputs.get(ref.step)
        if step_out is None:
            raise RenderError(f"step '{ref.step}' has no outputs")
        if ref.key not in step_out:
            raise RenderError(f"step '{ref.step}' has no output '{ref.key}' "
                              f"(it has: {', '.join(sorted(step_out)) or 'none'})")
        v = step_out[ref.key]
        for part in ref.path:
            if isinstance(v, dict) and part in v:
                v = v[part]
            elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
                v = v[int(part)]
            else:
                raise RenderError(f"steps.{ref.step}.outputs.{ref.key}: no '{part}' in the value")
        return v
    return lookup
