"""`run --wait`: a run executed in this process while the terminal shows its progress.

The run is recovered and executed by an executor of this process, so it finishes even when
no host or background worker is running; Ctrl-C leaves it to the next worker.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable

from . import terminal
from .states import RunStatus
from .terminal import err


def execute_here(svc, watch: Callable[[Any], Awaitable[None]], interrupted: Callable[[], None]) -> None:
    """This process's executor runs until `watch(executor)`, which shows the progress, stops
    it. Ctrl-C calls `interrupted` (to say where the work goes on) and exits 130: what is left
    is the next worker's or host's."""
    import asyncio

    from . import logsetup

    logsetup.configure("cli")
    svc.recover()
    executor = svc.make_executor()

    async def main():
        watcher = asyncio.create_task(watch(executor))
        await executor.run()
        await watcher

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        interrupted()
        raise SystemExit(130)


def wait_for_run(svc, run_id: str, *, show_progress: bool) -> dict:
    import asyncio

    tty = sys.stderr.isatty()
    state = {"last": None, "hinted": False}

    def render_progress(summary: dict) -> None:
        if not show_progress:
            return
        text = terminal.progress_line(summary)
        if text == state["last"]:
            return
        state["last"] = text
        if tty:
            sys.stderr.write("\r" + text.ljust(78))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    async def watch(executor):
        while True:
            summary = svc.summary(run_id)
            render_progress(summary)
            if RunStatus(summary["status"]).is_terminal:
                executor.stop()
                return
            if summary["status"] == RunStatus.PENDING and svc.open_slots(run_id) and not state["hinted"]:
                state["hinted"] = True
                err(f"run {run_id} waits for its page: hybrid-engine ingest {run_id} --content-file FILE")
            await asyncio.sleep(0.1)

    def interrupted() -> None:
        if tty:
            sys.stderr.write("\n")
        err(f"stopped waiting; run {run_id} goes on with the next worker or host "
            f"(`hybrid-engine show {run_id}`)")

    execute_here(svc, watch, interrupted)
    if show_progress and tty:
        sys.stderr.write("\n")
    return svc.run_document(run_id)
