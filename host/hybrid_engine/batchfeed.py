"""Makes a batch's runs as room frees up: the executor calls `feed` on its store thread.

A batch keeps at most `parallel` runs open; its waiting pages become runs in order, each
in one transaction with the item that held it (the item's page is then dropped: the run's
capture holds it). A paused, stopped or cancelled batch makes none. A batch whose spend has
reached its budget is stopped here before another run is made. The site rules are read again
when a run is made, as for any capture: a page whose site was ruled `never` since it came in
is `blocked` then, and never sent.
"""

from __future__ import annotations

import logging

from . import money
from .errors import BadRequest, HybridEngineError, SiteRefused

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)


class _Taken(Exception):
    """The item stopped waiting while its run was being made."""


class Feeder:
    def __init__(self, service: "Service") -> None:
        self.svc = service

    def pending(self) -> bool:
        """A running batch still has pages waiting (an executor run until idle waits for them)."""
        return self.svc.store.has_waiting_items()

    def feed(self, now: float) -> int:
        store = self.svc.store
        made = 0
        for batch_id, template, room, budget in store.batches_to_feed():
            if room <= 0:
                continue
            if budget is not None:
                spent = store.batch_cost(batch_id)
                # A budget of 0 is "nothing paid": its runs of free (local) steps go, and the
                # step guard (batchbudget.py) stops the batch at its first paid step.
                if spent >= budget and not (budget == 0 and spent == 0):
                    note = f"stopped: its budget of {money.usd_budget(budget)} is spent ({money.usd(spent)})"
                    store.set_batch_state(batch_id, "stopped", now, note, only_from=("running",))
                    log.info("batch %s %s", batch_id, note)
                    continue
            try:
                self.svc.template(template)
            except HybridEngineError as exc:  # the template is gone or broken: the batch waits for it
                store.set_batch_state(batch_id, "stopped", now, f"stopped: {exc.message}", only_from=("running",))
                log.warning("batch %s stopped: %s", batch_id, exc.message)
                continue
            for pos, page in store.waiting_items(batch_id, room):
                try:
                    with store.transaction():
                        # Read again inside the write lock: a cancel or pause, or another
                        # process's feeder, may have come since the batch was read as running.
                        row = store.batch_row(batch_id)
                        if row is None or row["state"] != "running":
                            break
                        result = self.svc.start(template, content=page["content"],
                                                source_url=page.get("source_url"),
                                                content_type=page.get("content_type") or "text/html",
                                                title=page.get("title"), selection=page.get("selection"))
                        if not store.item_started(batch_id, pos, result["run_id"]):
                            raise _Taken
                    made += 1
                except _Taken:  # its run was made elsewhere: this one is rolled back
                    continue
                except SiteRefused as exc:  # a `never` rule added since the page came in: not sent
                    store.set_item_aside(batch_id, pos, "blocked", exc.message)
                except BadRequest as exc:  # this page (too large, a type it cannot take): the others go on
                    store.set_item_aside(batch_id, pos, "unreadable", exc.message)
        return made


__all__ = ["Feeder"]
