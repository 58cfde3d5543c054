"""save_note: a run's result as a Markdown note in the user's notes folder (an Obsidian vault
works as is), with YAML front matter saying where it came from and what it cost.

Where: the folder the template writes out (`folder`, absolute, `~/`, or relative to the
notes folder), else `[notes] folder` of config.toml, else `notes/` in the data folder. The
page's title only fills the file's name, made safe by safepath.name_piece (no separator,
no `..`, no hidden file); when that name is taken, the note gets the run-and-step tag
(safepath.tagged), so a second page with the same title never overwrites the first and a
retry of the same step rewrites its own note. `mode: daily` appends an entry to one note
per local day (`YYYY-MM-DD.md`), its front matter written once, when the day's note is made.

The front matter is written by yaml.safe_dump, so a title holding `: "`, a line break or
`---` is one quoted value, never a second key or the end of the block.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from ..errors import PermanentStepError
from .base import StepContext, StepResult, SyncAction

MODES = ("note", "daily")
MAX_TAGS = 50


def _one_line(value, limit: int = 1000) -> str | None:
    """Untrusted text for a single-line field: whitespace runs (line breaks too) become one space."""
    if value is None:
        return None
    from ..safepath import as_text

    text = re.sub(r"\s+", " ", as_text(value)).strip()
    return text[:limit] or None


def _tags(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else re.split(r"[,\n]", str(value))
    out: list[str] = []
    for item in items[:MAX_TAGS]:
        tag = re.sub(r"\s+", "-", _one_line(item, 100) or "").lstrip("#")
        if tag and tag not in out:
            out.append(tag)
    return out


def notes_folder(folder: str | None) -> Path:
    """The folder a note goes in: the template's, else config.toml's [notes] folder, else the data folder's."""
    from .. import config, settings

    if folder and (os.path.isabs(folder) or folder.startswith("~")):
        return Path(folder).expanduser()
    root = settings.notes().path() or config.data_dir() / "notes"
    return root / folder if folder else root


def front_matter(fields: dict) -> str:
    import yaml

    body = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10**6)
    return f"---\n{body}---\n"


class SaveNote(SyncAction):
    """Runs in a worker thread (spec.blocking): yaml, the disk and the store's reads stay off the loop."""

    def compute(self, params, ctx: StepContext) -> StepResult:
        from .. import safepath
        from ..runfacts import cost_text

        mode = params.get("mode") or "note"
        if mode not in MODES:
            raise PermanentStepError(f"params.mode: expected one of {', '.join(MODES)}, got {str(mode)[:40]!r}",
                                     code="bad_param")
        folder = params.get("folder")
        if folder is not None and (not isinstance(folder, str) or ".." in re.split(r"[/\\]", folder)):
            raise PermanentStepError("params.folder: expected a folder path without '..'", code="unsafe_path")
        facts = ctx.run_facts() if ctx.run_facts else {"page": {}, "models": [], "cost_usd": None,
                                                        "cost_state": "unknown", "workflow": None}
        page = facts.get("page") or {}
        title = _one_line(params.get("title")) or _one_line(page.get("title")) or "Untitled"
        url = _one_line(params.get("url"), 4000) or page.get("url")
        content = params.get("content")
        if not isinstance(content, str):
            from ..safepath import as_text

            content = as_text(content)
        fields = {
            "title": title,
            "url": url,
            "captured_at": page.get("captured_at"),
            "workflow": facts.get("workflow"),
            "models": facts.get("models") or [],
            "cost": cost_text(facts),
            "cost_usd": facts.get("cost_usd"),
            "cost_state": facts.get("cost_state"),
            "tags": _tags(params.get("tags")),
            "run": ctx.run_id,
            "saved_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        root = notes_folder(folder)
        if root.exists() and not root.is_dir():  # else the folder's mkdir says only "File exists"
            raise PermanentStepError(f"save_note: the notes folder '{root}' is a file, not a folder "
                                     "([notes] folder in config.toml, or the template's folder)", code="bad_path")
        try:
            if mode == "daily":
                where, written = self._append_daily(root, fields, content)
            else:
                where, written = self._write_note(root, safepath.name_piece(title), fields, content,
                                                  f"{ctx.run_id}/{ctx.step_id}")
        except safepath.UnsafePath as exc:
            raise PermanentStepError(f"save_note: {exc}", code="unsafe_path") from exc
        except OSError as exc:
            raise PermanentStepError(f"save_note: cannot write in '{root}': {exc.strerror or exc}",
                                     code="bad_path") from exc
        ctx.log(f"note saved: {where}")
        return StepResult(outputs={"path": str(where), "bytes": written, "mode": mode})

    @staticmethod
    def _write_note(root: Path, piece: str, fields: dict, content: str, seed: str) -> tuple[Path, int]:
        from .. import safepath

        data = (front_matter(fields) + "\n" + content.rstrip("\n") + "\n").encode("utf-8")
        try:
            fd, where = safepath.open_for_write(f"{piece}.md", root, append=False, exclusive=True)
        except FileExistsError:
            # Taken: by this very run (a step re-run after a crash rewrites its note), or by
            # another page of the same title (this run and step's own tagged name).
            name = f"{piece}.md" if _written_by(root / f"{piece}.md", fields["run"]) else \
                f"{safepath.tagged(piece, seed)}.md"
            fd, where = safepath.open_for_write(name, root, append=False)
        try:
            safepath.write_all(fd, data)
        finally:
            os.close(fd)
        return where, len(data)

    @staticmethod
    def _append_daily(root: Path, fields: dict, content: str) -> tuple[Path, int]:
        from .. import safepath

        today = datetime.now().astimezone().date().isoformat()
        fd, where = safepath.open_for_write(f"{today}.md", root, append=True)
        try:
            _lock(fd)
            head = b""
            if os.fstat(fd).st_size == 0:
                head = front_matter({"date": today, "tags": fields["tags"]}).encode("utf-8") + b"\n"
            meta = " · ".join(x for x in (
                f"[source]({_md_url(fields['url'])})" if fields["url"] else None, fields["workflow"],
                ", ".join(fields["models"]) or None, f"cost {fields['cost']}", fields["saved_at"]) if x)
            entry = f"## {_md_text(fields['title'])}\n\n{meta}\n\n{content.rstrip()}\n\n".encode("utf-8")
            safepath.write_all(fd, head + entry)
        finally:
            os.close(fd)  # releases the lock
        return where, len(head) + len(entry)


def _md_text(text: str) -> str:
    """Page text inside the note's own Markdown (a daily entry's heading): shown as written, so
    a title cannot add an image, a link or HTML that a notes app would load or follow."""
    return re.sub(r"([\\`*_\[\]()<>!#|~&])", r"\\\1", text)


def _md_url(url: str) -> str:
    """A page URL as a link's destination that cannot end early and start an image or link of its own."""
    from urllib.parse import quote

    return re.sub(r"[()\[\]<>\\\s\x00-\x1f]", lambda m: quote(m.group(), safe=""), url)


def _written_by(path: Path, run_id: str) -> bool:
    """Whether the note at `path` has this run in its front matter."""
    import yaml

    import stat

    # Not through a link, and never waiting on a pipe: only a regular file can be our note.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 64 * 1024).decode("utf-8", "replace")
    except OSError:
        return False
    finally:
        os.close(fd)
    if not head.startswith("---\n") or "\n---\n" not in head[3:]:
        return False
    try:
        meta = yaml.safe_load(head[4:head.index("\n---\n", 3)])
    except yaml.YAMLError:
        return False
    return isinstance(meta, dict) and str(meta.get("run")) == run_id


def _lock(fd: int) -> None:
    """Two runs appending to today's note at once: one after the other, one front matter."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
