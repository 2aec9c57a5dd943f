"""Store: WAL mode, numbered migrations applied once, and refusal of a newer schema."""

import sqlite3

import pytest

from softswitch.store import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, Store


def test_store_created_on_first_open_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "sw.db"
    store = Store.open(path)
    try:
        assert path.exists()
        assert store.journal_mode == "wal"
        assert store.version == SCHEMA_VERSION
        assert store.applied_migrations() == list(range(1, SCHEMA_VERSION + 1))
        assert {"calls", "registrations", "schema_migrations"} <= set(store.tables())
    finally:
        store.close()


def test_store_second_open_is_a_no_op(tmp_path):
    path = tmp_path / "sw.db"
    Store.open(path).close()
    before = sqlite3.connect(path).execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    store = Store.open(path)
    store.close()
    after = sqlite3.connect(path).execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert before == after


def test_store_applies_only_new_migrations_in_order(tmp_path):
    path = tmp_path / "sw.db"
    Store.open(path).close()
    extra = [*MIGRATIONS, ["CREATE TABLE t2 (x INTEGER)"], ["INSERT INTO t2 VALUES (7)"]]
    store = Store.open(path, migrations=extra)
    try:
        assert store.version == SCHEMA_VERSION + 2
        assert store.applied_migrations()[-2:] == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]
        assert "t2" in store.tables()
    finally:
        store.close()


def test_store_failed_migration_rolls_back_and_keeps_version(tmp_path):
    path = tmp_path / "sw.db"
    broken = [*MIGRATIONS, ["CREATE TABLE t3 (x INTEGER)", "THIS IS NOT SQL"]]
    with pytest.raises(sqlite3.OperationalError):
        Store.open(path, migrations=broken)
    store = Store.open(path)
    try:
        assert store.version == SCHEMA_VERSION
        assert "t3" not in store.tables()
    finally:
        store.close()


def test_store_newer_schema_refuses_with_clear_message(tmp_path):
    path = tmp_path / "sw.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        Store.open(path)
    assert f"schema version {SCHEMA_VERSION + 3}" in str(info.value)
    assert f"knows ({SCHEMA_VERSION})" in str(info.value)
    assert str(path) in str(info.value)
