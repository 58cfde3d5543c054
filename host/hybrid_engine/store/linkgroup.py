"""A group of chain links settled in one transaction (see LinkGroup): the executor's fast
path for a chain of pure inline steps, kept apart from the hot path's general settle."""

from __future__ import annotations

import sqlite3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hotpath import HotPath

from ..errors import StoreError
from .connection import _rollback
from .failures import reraise
from .records import Claimed, ClaimRequest, Outcome


Ahead = tuple  # (Claimed, link, inline outputs): HotPath.look_ahead; link[14]: the step is a join


class LinkGroup:
    """Links of a chain settled in one transaction: `with store.links() as group`, then
    group.settle(outcome, ...) per link; COMMIT when the block ends, ROLLBACK if it raises.

    A link is a step without metadata, log or provider call that completed, and the claim of
    its one dependent, known ahead (HotPath._link), as known: BEGIN, two UPDATEs and COMMIT,
    nothing read, without settle's general bookkeeping (a third of a link's time went to it).
    The executor computes the pure inline steps after a link before it settles them, then
    settles them all in one group (executor._settle_here says why that is safe): only SQL
    runs while the group holds the write lock.

    Every lookup and object saved here is saved at every link: inside a run, the Python around
    a link's statements runs about twice as slow as it does alone."""

    __slots__ = ("store", "cur", "conn", "n")

    def __init__(self, store: "HotPath", cur: sqlite3.Cursor, conn: sqlite3.Connection):
        self.store, self.cur, self.conn = store, cur, conn
        self.n = 0  # links settled so far; the transaction is open once there is one

    def __enter__(self) -> "LinkGroup":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.n:
            return
        if exc_type is not None:
            _rollback(self.conn)
            return
        try:
            self.cur.execute("COMMIT")
        except BaseException as error:
            _rollback(self.conn)
            if isinstance(error, sqlite3.Error):
                reraise(error, self.store.path)
            raise
        self.store.commits += 1

    def settle(self, o: Outcome, req: ClaimRequest, now: float, ahead: "Ahead | None" = None) -> Claimed | None:
        """`o` written and its dependent claimed, the claim returned; or None, with nothing of
        `o` written, when it is not a link or a row is not as known (the general path decides).
        `ahead`: HotPath.look_ahead's answer for `o`, which saves asking again."""
        store = self.store
        cl = o.claim
        if ahead is None:
            known = store._linkable(o, req)
            if known is None:
                return None
            link, inline = known
        else:
            _, link, inline = ahead
        cur = self.cur
        done = (inline, 0, o.ended_at, int(round((o.ended_at - o.started_at) * 1000)), cl.rowid, cl.epoch)
        try:
            if self.n:
                # Inside the group's transaction `o`'s step is ours, claimed by an earlier link:
                # the claim goes first, so that a row not as known leaves nothing of `o` written.
                nxt = store._claim_link(cur, link, req, now, cl.carried + 1)
                if nxt is None:  # `o` goes the general way later, after a look ahead: not from a stale link
                    store._forget_if_moved(cur, link)
                    return None
                if not cur.execute(store._COMPLETE_PLAIN, done).rowcount:
                    raise StoreError(f"run {cl.run_id} step {cl.step_id}: claimed in this transaction, yet gone")
            else:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    nxt = None
                    if cur.execute(store._COMPLETE_PLAIN, done).rowcount:
                        nxt = store._claim_link(cur, link, req, now, cl.carried + 1)
                    if nxt is None:  # the general way tries the link again and reads the row
                        _rollback(self.conn)
                        return None
                except BaseException:
                    _rollback(self.conn)
                    raise
        except sqlite3.Error as exc:
            reraise(exc, store.path)
        store._links.pop((cl.run_id, link[2]), None)  # used, as _link uses a link read ahead
        self.n += 1
        return nxt


def _claimed_as(link: tuple, carry: int) -> Claimed:
    """The claim of a known link as _CLAIM_LINK makes it."""
    return Claimed(link[0], link[1], link[2], link[3], link[4], link[5], link[6], link[7] + 1, link[8] + 1,
                   link[9], link[10], link[11], link[12], link[13] + carry)
