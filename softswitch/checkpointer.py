"""WAL checkpoints in a thread of their own, so the event loop never waits for the disk.

The store commits in WAL mode with `synchronous=NORMAL`: a commit appends to the WAL and does not fsync.
But by default the commit that takes the WAL past 1,000 pages also checkpoints it, copying the pages into
the database file and fsyncing both, in the committing thread: the event loop. At 325 CPS that came every
2 s and stopped the loop for 10-30 ms (three fdatasyncs on this VM, and the copying), a share of the tail
of INVITE->180. Here the store's own connection never checkpoints (`wal_autocheckpoint=0`) and this
thread runs a PASSIVE checkpoint every `interval_s` on a connection of its own: PASSIVE takes no lock a
writer waits for, and sqlite3 releases the GIL while it works.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from softswitch.logs import event

log = logging.getLogger(__name__)


class WalCheckpointer:
    """Checkpoints one database's WAL every `interval_s` until `stop`."""

    def __init__(self, path: str, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.runs = 0
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the WAL, frames checkpointed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        failed = False
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            while not self._stop.wait(self.interval_s):
                try:
                    self.last = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    failed = False
                except sqlite3.Error as exc:  # a full disk, say: said once, tried again next time
                    if not failed:
                        event(log, "store.checkpoint_failed", level=logging.WARNING, reason=str(exc))
                    failed = True
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop after the checkpoint in progress, if any (the store's last close checkpoints the rest)."""
        self._stop.set()
        self._thread.join(timeout=10.0)
