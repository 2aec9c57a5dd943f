"""WAL checkpoints in a thread of their own, so the event loop never waits for the disk.

The store commits in WAL mode with `synchronous=NORMAL`: a commit appends to the WAL and does not fsync.
But by default the commit that takes the WAL past 1,000 pages also checkpoints it, copying the pages into
the database file and fsyncing both, in the committing thread: the event loop. At 325 CPS that came every
2 s and stopped the loop for 15-30 ms (three fdatasyncs on this VM, and the copying), a share of the tail
of INVITE->180. Here the store's own connection never checkpoints (`wal_autocheckpoint=0`) and this
thread runs a PASSIVE checkpoint every `interval_s` on a connection of its own: PASSIVE takes no lock a
writer waits for, and sqlite3 releases the GIL while it works.

A PASSIVE checkpoint never starts the WAL over: only a writer does, when it finds every frame already
copied, and on a busy switch some commit always lands while the checkpoint runs, so the file would grow
for ever. Once the WAL holds `restart_frames` (all of them copied), a RESTART checkpoint waits for that
moment itself: it holds the next writer back for as long as it takes (the frames are copied already, so
about one fsync), once every few thousand frames instead of at every thousand pages.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading

from softswitch.logs import event

log = logging.getLogger(__name__)

RESTART_FRAMES = 4000  # about 16 MB of WAL


class WalCheckpointer:
    """Checkpoints one database's WAL every `interval_s` until `stop`."""

    def __init__(self, path: str, interval_s: float = 1.0, restart_frames: int = RESTART_FRAMES) -> None:
        self.path = path
        self.interval_s = interval_s
        self.restart_frames = restart_frames
        self.runs = 0
        self.restarts = 0
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the WAL, frames checkpointed)
        self._conn: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self._checkpoint()
                    failing = False
                except Exception as exc:  # a full disk, a locked file: said once, tried again next time
                    if self._stop.is_set():
                        return  # interrupted by `stop`
                    if not failing:
                        event(log, "store.checkpoint_failed", level=logging.WARNING, reason=str(exc))
                    failing = True
        finally:
            if self._conn is not None:
                self._conn.close()

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self.last = busy, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        if busy == 0 and frames >= self.restart_frames and not self._stop.is_set():
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += 1

    def stop(self) -> None:
        """Stop now: a checkpoint in progress is interrupted (the store's last close checkpoints the rest)."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed by the thread meanwhile
                conn.interrupt()  # thread-safe: the checkpoint under way returns at once
        self._thread.join(timeout=2.0)
