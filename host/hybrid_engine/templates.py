"""Loading, validating and watching workflow templates.

Every problem is reported with the file, the step and the field, all at once, so
a user fixes a template in one go instead of one error per attempt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from . import config, dag, fanout, safepath
from .adapters import ON_OVERFLOW, SPECS
from .adapters.base import LITERAL_KINDS
from .errors import NotFound, TemplateError
from .models import MAX_STEPS, WorkflowTemplate

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false",
            dict: "a mapping", list: "a list", object: "any value"}.get(t, t.__name__)


def _type_ok(value: Any, expected) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if object in types:
        return True
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


# ---- reading and parsing, with limits ------------------------------------------------
#
# A template is read whole and parsed before anything looks at it, so the limits come
# first: the size from fstat before any byte is read, then nesting depth and (YAML) the
# number of nodes after aliases are expanded, counted while the parser composes, so a
# 1 KB "billion laughs" file is refused after a few hundred nodes instead of expanding.
# Each limit is far above what a person writes: the bundled templates are under 3 KB,
# 6 levels deep and 6 steps long.

MAX_TEMPLATE_BYTES = 2 * 1024 * 1024  # room for MAX_STEPS steps of ~200 bytes each
MAX_DEPTH = 64  # mappings and lists inside each other; a template uses about 6
MAX_NODES = 1_000_000  # YAML values after aliases expand: what MAX_TEMPLATE_BYTES holds without aliases

def _too_deep(source: str) -> TemplateError:
    return TemplateError(f"{source}: nested deeper than {MAX_DEPTH} levels (the limit for a template)",
                         source=source)


def _check_depth(value: Any, source: str) -> None:
    """Depth of parsed JSON, counted with a stack rather than recursion."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise _too_deep(source)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))


class _LimitExceeded(Exception):
    def __init__(self, message: str, mark):
        super().__init__(message)
        self.message = message
        self.mark = mark


class _LimitedComposer:
    """A YAML composer that counts, for every node, its depth and how many nodes it stands
    for once aliases are expanded (an alias costs what its anchor holds), and stops at the
    limits. PyYAML's own composer recurses once per level and shares aliased nodes, which
    everything after it (validation, rendering, JSON) then walks as if copied."""

    def compose_document(self):
        self._depth = 0
        self._size: dict[int, int] = {}  # id(node) -> nodes it expands to
        self._height: dict[int, int] = {}  # id(node) -> levels it adds
        return super().compose_document()

    def compose_node(self, parent, index):
        from yaml.events import AliasEvent

        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._size:
                    raise _LimitExceeded(f"alias *{event.anchor} refers to a value that contains it",
                                         event.start_mark)
                if self._depth + self._height[id(node)] > MAX_DEPTH:
                    raise _LimitExceeded(f"alias *{event.anchor} nests values deeper than {MAX_DEPTH} "
                                         f"levels (the limit for a template)", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _LimitExceeded(f"nested deeper than {MAX_DEPTH} levels (the limit for a template)",
                                 self.peek_event().start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node.value, list):
            children = [x for pair in node.value for x in pair] if node.id == "mapping" else node.value
            size = 1 + sum(self._size[id(c)] for c in children)
            height = 1 + max((self._height[id(c)] for c in children), default=0)
        else:
            size, height = 1, 1
        if size > MAX_NODES:
            raise _LimitExceeded(f"more than {MAX_NODES:,} values once aliases are expanded "
                                 f"(the limit for a template)", node.start_mark)
        self._size[id(node)] = size
        self._height[id(node)] = height
        return node


def _yaml_loader():
    """The C event parser when PyYAML has libyaml (about 4x faster than the pure-Python
    one), with the limited composer in Python either way: libyaml's own composer recurses
    in C and cannot be limited."""
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    try:
        from yaml._yaml import CParser as Parser
    except ImportError:  # PyYAML built without libyaml
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class Loader(_LimitedComposer, Reader, Scanner, Parser, Composer, SafeConstructor, Resolver):
            def __init__(self, stream):
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)
        return yaml, Loader

    class Loader(_LimitedComposer, Composer, Parser, SafeConstructor, Resolver):
        def __init__(self, stream):
            Parser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
    return yaml, Loader


def parse_text(text: str, source: str) -> Any:
    if source.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except RecursionError:  # json recurses once per level: past ~1,000 levels it gives up
            raise _too_deep(source) from None
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{source}: line {exc.lineno}, column {exc.colno}: malformed JSON: {exc.msg}",
                                source=source) from exc
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise TemplateError(f"{source}: malformed JSON: {exc}", source=source) from exc
        _check_depth(data, source)
        return data
    yaml, loader = _yaml_loader()
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeConstructor loader
    except _LimitExceeded as exc:
        where = f"line {exc.mark.line + 1}, column {exc.mark.column + 1}: " if exc.mark is not None else ""
        raise TemplateError(f"{source}: {where}{exc.message}", source=source) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(f"{source}: {where}malformed YAML: {problem}", source=source) from exc
    except ValueError as exc:  # a value the constructor cannot convert (a 5,000-digit integer)
        raise TemplateError(f"{source}: malformed YAML: {exc}", source=source) from exc


def read_text(path: Path, source: str) -> str:
    """The file's text, refused unread when it is not a regular file or is over the size
    limit (a FIFO would block the open, /dev/zero never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise NotFound(f"{source}: no such template file") from exc
    except OSError as exc:
        raise TemplateError(f"{source}: cannot read: {exc.strerror or exc}", source=source) from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TemplateError(f"{source}: not a regular file", source=source)
        if st.st_size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{source}: {st.st_size:,} bytes, over the limit of {MAX_TEMPLATE_BYTES:,} "
                                f"bytes for a template", source=source)
        try:
            data = f.read(MAX_TEMPLATE_BYTES + 1)  # the file may have grown since fstat
        except OSError as exc:
            raise TemplateError(f"{source}: cannot read: {exc.strerror or exc}", source=source) from exc
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{source}: over the limit of {MAX_TEMPLATE_BYTES:,} bytes for a template",
                            source=source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{source}: byte {exc.start}: not UTF-8 text", source=source) from exc


def validate(data: Any, source: str) -> WorkflowTemplate:
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: a template is a mapping with 'name' and 'steps', "
                            f"got {type(data).__name__}", source=source)
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > MAX_STEPS:
        raise TemplateError(f"{source}: field 'steps': {len(steps):,} steps, over the limit of {MAX_STEPS:,} "
                            f"steps for a template", source=source)
    problems: list[str] = []
    try:
        tpl = WorkflowTemplate.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = list(err["loc"])
            where = ""
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
                steps = data.get("steps") or []
                sid = steps[loc[1]].get("id") if isinstance(steps[loc[1]], dict) else None
                where = f"step '{sid}'" if sid else f"step #{loc[1] + 1}"
                field = ".".join(str(x) for x in loc[2:]) or "(step)"
                where += f", field '{field}'"
            else:
                where = f"field '{'.'.join(str(x) for x in loc)}'"
            problems.append(f"{where}: {err['msg']}")
        raise TemplateError(_format(source, problems), source=source) from exc

    problems.extend(_redact_problems(tpl))
    seen = set()
    for s in tpl.steps:
        if s.id in seen:
            problems.append(f"step '{s.id}', field 'id': duplicate step id")
        seen.add(s.id)
    problems += fanout.template_problems(tpl, seen)
    known_steps = _some(s.id for s in tpl.steps)  # built once: it goes into every unknown-step message
    graph = {s.id: list(s.dependencies) for s in tpl.steps}
    for s in tpl.steps:
        spec = SPECS.get(s.action)
        if spec is None or s.action == fanout.FOR_EACH:
            problems.append(f"step '{s.id}', field 'action': unknown action '{s.action}' "
                            f"(known: {', '.join(sorted(set(SPECS) - {fanout.FOR_EACH}))})"
                            + ("; for_each is a step key: `for_each: \"{{ steps.<id>.outputs.<key> }}\"`"
                               if s.action == fanout.FOR_EACH else ""))
            spec = None
        for dep in s.dependencies:
            if dep not in seen:
                problems.append(f"step '{s.id}', field 'dependencies': unknown step '{dep}' "
                                f"(steps: {known_steps})")
            elif dep == s.id:
                problems.append(f"step '{s.id}', field 'dependencies': a step cannot depend on itself")
        if spec is not None:
            allowed = spec.all_params()
            for key, value in s.params.items():
                p = allowed.get(key)
                if p is None:
                    problems.append(f"step '{s.id}', field 'params.{key}': unknown parameter for "
                                    f"'{s.action}' (known: {', '.join(sorted(allowed)) or 'none'})")
                elif not (isinstance(value, str) and dag.REF_PATTERN.fullmatch(value)) and not _type_ok(value, p.type):
                    problems.append(f"step '{s.id}', field 'params.{key}': expected {_type_name(p.type)}, "
                                    f"got {type(value).__name__} {json.dumps(value, default=str)[:60]}")
                elif p.kind in LITERAL_KINDS and isinstance(value, str) and "{{" in value:
                    problems.append(f"step '{s.id}', field 'params.{key}': a {p.kind} is written out in the "
                                    f"template (or named in config.toml), never filled from a reference")
                elif p.kind == "fallback":
                    from .fallbacks import problem as fallback_problem

                    problem = fallback_problem(value)
                    if problem:
                        problems.append(f"step '{s.id}', field 'params.{key}': {problem}")
                elif p.kind == "path" and isinstance(value, str):
                    problem = safepath.template_problem(value, dag.REF_PATTERN)
                    if problem:
                        problems.append(f"step '{s.id}', field 'params.{key}': {problem}")
                elif key == "on_overflow" and isinstance(value, str) and value not in ON_OVERFLOW:
                    problems.append(f"step '{s.id}', field 'params.on_overflow': '{value}' is not one of "
                                    f"{', '.join(ON_OVERFLOW)}")
            for key, p in allowed.items():
                if p.required and key not in s.params:
                    problems.append(f"step '{s.id}', field 'params.{key}': required by '{s.action}'")
            if spec.input_slot and s.for_each is not None:
                problems.append(f"step '{s.id}', field 'for_each': a capture slot cannot run per item")
            if spec.input_slot and s.dependencies:
                problems.append(f"step '{s.id}', field 'dependencies': a capture slot is filled from "
                                f"outside and cannot depend on other steps")
    cycle = dag.find_cycle(graph) if not problems else None
    if cycle:
        problems.append(f"step '{cycle[0]}', field 'dependencies': cycle {' -> '.join(cycle)}")
    if not problems:
        problems = _reference_problems(tpl, graph)
    if problems:
        raise TemplateError(_format(source, problems), source=source)
    tpl.source = source
    return tpl


def _redact_problems(tpl: WorkflowTemplate) -> list[str]:
    """Unknown kinds in `redact:` (the template's or a step's); the template's list is then
    given to every model step that has none of its own, which applies it before a cloud call."""
    from .pii import KINDS, check_kinds

    problems = []
    bad = check_kinds(tpl.redact)
    if bad:
        problems.append(f"field 'redact': unknown kind {', '.join(map(repr, bad))} (known: {', '.join(KINDS)})")
    for s in tpl.steps:
        spec = SPECS.get(s.action)
        if spec is None or spec.provider is None:
            continue
        own = s.params.get("redact")
        if isinstance(own, list):
            bad = check_kinds(own)
            if bad:
                problems.append(f"step '{s.id}', field 'params.redact': unknown kind "
                                f"{', '.join(map(repr, bad))} (known: {', '.join(KINDS)})")
        elif tpl.redact and "redact" not in s.params:
            s.params["redact"] = list(tpl.redact)
    return problems


def _reference_problems(tpl: WorkflowTemplate, graph: dict[str, list[str]]) -> list[str]:
    """Every `{{ steps.X.outputs.K }}` names a known step upstream of its own and an output
    that step has; upstream is checked for all references in one pass over the graph."""
    by_id = {s.id: s for s in tpl.steps}
    problems: list[str] = []
    found: list[tuple[str, str, dag.Ref]] = []
    wanted: dict[str, set[str]] = {}
    for s in tpl.steps:
        fields = list(dag.refs_in(s.params))
        if s.for_each is not None:
            fields.insert(0, ("", fanout.list_expr(s.for_each)))
        for field, expr in fields:
            fname = f"params.{field}" if field else "for_each"
            try:
                ref = dag.parse_ref(expr)
            except dag.RefError as exc:
                problems.append(f"step '{s.id}', field '{fname}': {exc}")
                continue
            if ref.kind == "item":
                if by_id[s.id].for_each is None:
                    problems.append(f"step '{s.id}', field '{fname}': {{{{ {ref.key} }}}} is defined only in a step "
                                    f"with for_each")
                continue
            if ref.kind != "step":
                continue
            if ref.step not in by_id:
                problems.append(f"step '{s.id}', field '{fname}': reference to unknown step '{ref.step}'")
                continue
            found.append((s.id, fname, ref))
            wanted.setdefault(s.id, set()).add(ref.step)
    missing = dag.missing_ancestors(graph, wanted)
    for sid, fname, ref in found:
        if ref.step in missing.get(sid, ()):
            problems.append(f"step '{sid}', field '{fname}': references step '{ref.step}', which is "
                            f"not among its dependencies; add it to 'dependencies'")
            continue
        outputs = SPECS[by_id[ref.step].action].outputs
        if outputs is not None and ref.key not in outputs:
            problems.append(f"step '{sid}', field '{fname}': step '{ref.step}' "
                            f"({by_id[ref.step].action}) has no output '{ref.key}' "
                            f"(it has: {', '.join(sorted(outputs))})")
    return problems


def _some(names, shown: int = 20) -> str:
    """A list of names for a message, cut short: a message per problem must not hold every
    step of a 10,000-step template."""
    names = list(names)
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f", ... ({more:,} more)" if more > 0 else "")


MAX_PROBLEMS_SHOWN = 50


def _format(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more:,} more" if more > 0 else ""
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in shown) + tail


def load_file(path: str | Path) -> WorkflowTemplate:
    path = Path(path)
    source = str(path)
    if path.suffix.lower() not in SUFFIXES:
        raise TemplateError(f"{source}: a template file ends in .yaml, .yml or .json", source=source)
    return validate(parse_text(read_text(path, source), source), source)


def bundled_dir():
    return resources.files("hybrid_engine") / "examples"


def seed_templates(folder: Path) -> None:
    """A fresh install starts with the bundled examples."""
    config.ensure_private_dir(folder)
    for entry in bundled_dir().iterdir():
        if entry.name.endswith(SUFFIXES):
            target = folder / entry.name
            if not target.exists():
                with resources.as_file(entry) as src:
                    shutil.copyfile(src, target)


class TemplateRegistry:
    """The templates folder, re-read when a file changes (stat checks; watch() for push)."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else config.templates_dir()
        self._cache: dict[Path, tuple[tuple[int, int], WorkflowTemplate | TemplateError]] = {}
        self._lock = threading.Lock()
        if not self.folder.exists():
            seed_templates(self.folder)

    def _scan(self) -> dict[Path, WorkflowTemplate | TemplateError]:
        out = {}
        with self._lock:
            try:
                files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            except FileNotFoundError:
                files = []
            for path in files:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                key = (st.st_mtime_ns, st.st_size)
                cached = self._cache.get(path)
                if cached is None or cached[0] != key:
                    try:
                        value: WorkflowTemplate | TemplateError = load_file(path)
                    except TemplateError as exc:
                        value = exc
                    except NotFound:  # removed since the listing
                        continue
                    except Exception as exc:  # noqa: BLE001 - one file must not hide the others
                        log.exception("template %s could not be loaded", path)
                        value = TemplateError(f"{path}: could not be loaded ({type(exc).__name__}); "
                                              f"details are in the log", source=str(path))
                    self._cache[path] = (key, value)
                out[path] = self._cache[path][1]
            for gone in set(self._cache) - set(out):
                del self._cache[gone]
        return out

    def all(self) -> list[WorkflowTemplate]:
        return [v for v in self._scan().values() if isinstance(v, WorkflowTemplate)]

    def errors(self) -> list[TemplateError]:
        return [v for v in self._scan().values() if isinstance(v, TemplateError)]

    def get(self, ref: str) -> WorkflowTemplate:
        """By `name`, by file name without extension, or as a path to a file."""
        scanned = self._scan()
        for path, value in scanned.items():
            if isinstance(value, WorkflowTemplate) and value.name == ref:
                return value
        for path, value in scanned.items():
            if path.stem == ref:
                if isinstance(value, TemplateError):
                    raise value
                return value
        candidate = Path(ref).expanduser()
        if candidate.suffix.lower() in SUFFIXES and (candidate.exists() or "/" in ref or "\\" in ref):
            return load_file(candidate)
        names = sorted(v.name for v in scanned.values() if isinstance(v, WorkflowTemplate))
        raise NotFound(f"no template named '{ref}' in {self.folder} (have: {', '.join(names) or 'none'})")

    def _files(self) -> dict[Path, tuple[int, int]]:
        """What a change is judged by: each template file's mtime and size."""
        state = {}
        try:
            for path in self.folder.iterdir():
                if path.suffix.lower() in SUFFIXES:
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    state[path] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            pass
        return state

    def watch(self, on_change: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Reload on change in a daemon thread; watchfiles is imported only here.

        No change made after this returns is missed: watchfiles cannot say when it is armed,
        so the folder is noted now and compared again at its first yield (it yields on its
        first timeout too), when it certainly is; a file written in between is reported then.
        """
        before = self._files()

        def loop():
            try:
                from watchfiles import watch
            except ImportError:  # pragma: no cover - a dependency, but never fatal
                log.warning("watchfiles unavailable; templates reload on access only")
                return
            armed = False
            try:
                for changes in watch(self.folder, stop_event=stop, debounce=200, rust_timeout=500,
                                     yield_on_timeout=True):
                    if not changes:  # a timeout
                        if armed:
                            continue
                        armed = True
                        if self._files() == before:
                            continue
                    armed = True
                    self._scan()
                    try:
                        on_change()
                    except Exception:  # noqa: BLE001 - a listener must not stop the watcher
                        log.exception("template change listener failed")
            except Exception:  # noqa: BLE001
                log.exception("template watcher stopped")

        t = threading.Thread(target=loop, name="template-watch", daemon=True)
        t.start()
        return t
