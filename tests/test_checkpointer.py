"""softswitch/checkpointer.py: the store's WAL checkpointed by a thread, never by the loop's commits."""

import time

from softswitch.checkpointer import WalCheckpointer
from softswitch.store import CallRecord, Store


def calls(n: int, start: int = 0) -> list[CallRecord]:
    return [
        CallRecord(
            id=f"call_{i:06d}",
            direction="inbound",
            from_uri="sip:+15550100@trunk.test",
            to_uri="sip:alice@example.test",
            status="initiated",
            created_at=1_700_000_000.0 + i,
        )
        for i in range(start, start + n)
    ]


def wal_pages(path) -> int:
    return (path.parent / (path.name + "-wal")).stat().st_size // 4096


def write_8000_calls(store: Store) -> None:
    for i in range(80):
        store.save_calls(calls(100, start=100 * i))


def test_checkpointer_the_stores_own_commits_no_longer_checkpoint(tmp_path):
    default = Store.open(tmp_path / "default.db")
    write_8000_calls(default)
    assert wal_pages(tmp_path / "default.db") <= 1100  # a commit past 1,000 pages checkpointed, the WAL restarted
    default.close()
    path = tmp_path / "sw.db"
    store = Store.open(path)
    try:
        store.checkpoint_in_background(interval_s=3600.0)  # the thread waits: only commits could checkpoint
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        write_8000_calls(store)
        assert wal_pages(path) > 1500 and store.checkpointer.runs == 0  # no commit checkpointed
        assert store.get_call("call_007999") is not None
    finally:
        store.close()


def test_checkpointer_runs_passive_checkpoints_on_its_interval(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    try:
        store.checkpoint_in_background(interval_s=0.02)
        store.save_calls(calls(50))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            last = store.checkpointer.last
            if last is not None and last[1] > 0 and last[1] == last[2]:
                break
            time.sleep(0.02)
        busy, frames, done = store.checkpointer.last
        assert busy == 0 and frames > 0 and done == frames  # every frame copied into the database file
        assert store.get_call("call_000049") is not None
    finally:
        store.close()
    assert not store.checkpointer._thread.is_alive()


def test_checkpointer_not_for_a_memory_store():
    store = Store.open(":memory:")
    store.checkpoint_in_background()
    assert store.checkpointer is None
    store.close()


def test_checkpointer_keeps_the_wal_bounded_under_commits_faster_than_its_checkpoints(tmp_path):
    """A commit lands during nearly every PASSIVE checkpoint here, so no writer ever finds the WAL all copied
    and starts it over: without the RESTART past `restart_frames` the file grows as long as calls come."""
    path = tmp_path / "sw.db"
    store = Store.open(path)
    try:
        store._db.execute("PRAGMA wal_autocheckpoint=0")
        store._db.execute("PRAGMA journal_size_limit=0")
        store.checkpointer = WalCheckpointer(str(path), interval_s=0.01, restart_frames=300)
        peak = 0
        deadline = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < deadline:  # one small commit every ~1 ms: about 4,000 frames in all
            store.save_calls(calls(1, start=i))
            i += 1
            if i % 50 == 0:
                peak = max(peak, wal_pages(path))
            time.sleep(0.001)
        assert store.checkpointer.restarts >= 1
        assert peak < 1500, f"WAL grew to {peak} pages over {i} commits"
        assert store.get_call(f"call_{i - 1:06d}") is not None
    finally:
        store.close()


def test_checkpointer_stop_returns_promptly_and_quietly(tmp_path, caplog):
    store = Store.open(tmp_path / "sw.db")
    store.checkpoint_in_background(interval_s=0.005)
    write_8000_calls(store)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 2.5
    assert not store.checkpointer._thread.is_alive()
    assert "checkpoint_failed" not in caplog.text
