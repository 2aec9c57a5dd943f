"""softswitch/checkpointer.py: the store's WAL checkpointed by a thread, never by the loop's commits."""

import time

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
