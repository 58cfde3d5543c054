"""Loading, validating and watching workflow templates.

Every problem is reported with the file, the step and the field, all at once, so
a user fixes a template in one go instead of one error per attempt.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from . import config, dag, safepath
from .adapters import SPECS
from .errors import NotFound, TemplateError
from .models import WorkflowTemplate

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


def parse_text(text: str, source: str) -> Any:
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{source}: line {exc.lineno}, column {exc.colno}: malformed JSON: {exc.msg}",
                                source=source) from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(f"{source}: {where}malformed YAML: {problem}", source=source) from exc


def validate(data: Any, source: str) -> WorkflowTemplate:
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: a template is a mapping with 'name' and 'steps', "
                            f"got {type(data).__name__}", source=source)
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

    ids = [s.id for s in tpl.steps]
    seen = set()
    for s in tpl.steps:
        if s.id in seen:
            problems.append(f"step '{s.id}', field 'id': duplicate step id")
        seen.add(s.id)
    graph = {s.id: list(s.dependencies) for s in tpl.steps}
    for s in tpl.steps:
        spec = SPECS.get(s.action)
        if spec is None:
            problems.append(f"step '{s.id}', field 'action': unknown action '{s.action}' "
                            f"(known: {', '.join(sorted(SPECS))})")
        for dep in s.dependencies:
            if dep not in seen:
                problems.append(f"step '{s.id}', field 'dependencies': unknown step '{dep}' "
                                f"(steps: {', '.join(ids)})")
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
                elif p.kind == "path" and isinstance(value, str):
                    problem = safepath.template_problem(value, dag.REF_PATTERN)
                    if problem:
                        problems.append(f"step '{s.id}', field 'params.{key}': {problem}")
            for key, p in allowed.items():
                if p.required and key not in s.params:
                    problems.append(f"step '{s.id}', field 'params.{key}': required by '{s.action}'")
            if spec.input_slot and s.dependencies:
                problems.append(f"step '{s.id}', field 'dependencies': a capture slot is filled from "
                                f"outside and cannot depend on other steps")
    cycle = dag.find_cycle(graph) if not problems else None
    if cycle:
        problems.append(f"step '{cycle[0]}', field 'dependencies': cycle {' -> '.join(cycle)}")
    if not problems:
        upstream = dag.upstream_sets(graph)
        by_id = {s.id: s for s in tpl.steps}
        for s in tpl.steps:
            for field, expr in dag.refs_in(s.params):
                fname = f"params.{field}"
                try:
                    ref = dag.parse_ref(expr)
                except dag.RefError as exc:
                    problems.append(f"step '{s.id}', field '{fname}': {exc}")
                    continue
                if ref.kind != "step":
                    continue
                if ref.step not in by_id:
                    problems.append(f"step '{s.id}', field '{fname}': reference to unknown step '{ref.step}'")
                elif ref.step not in upstream[s.id]:
                    problems.append(f"step '{s.id}', field '{fname}': references step '{ref.step}', which is "
                                    f"not among its dependencies; add it to 'dependencies'")
                else:
                    outputs = SPECS[by_id[ref.step].action].outputs
                    if outputs is not None and ref.key not in outputs:
                        problems.append(f"step '{s.id}', field '{fname}': step '{ref.step}' "
                                        f"({by_id[ref.step].action}) has no output '{ref.key}' "
                                        f"(it has: {', '.join(sorted(outputs))})")
    if problems:
        raise TemplateError(_format(source, problems), source=source)
    tpl.source = source
    return tpl


def _format(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def load_file(path: str | Path) -> WorkflowTemplate:
    path = Path(path)
    source = str(path)
    if path.suffix.lower() not in SUFFIXES:
        raise TemplateError(f"{source}: a template file ends in .yaml, .yml or .json", source=source)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise NotFound(f"{source}: no such template file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{source}: cannot read: {exc}", source=source) from exc
    return validate(parse_text(text, source), source)


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

    def watch(self, on_change: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Reload on change in a daemon thread; watchfiles is imported only here."""
        def loop():
            try:
                from watchfiles import watch
            except ImportError:  # pragma: no cover - a dependency, but never fatal
                log.warning("watchfiles unavailable; templates reload on access only")
                return
            try:
                for _changes in watch(self.folder, stop_event=stop, debounce=200, rust_timeout=500):
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
