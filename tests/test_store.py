"""Store: WAL mode, numbered migrations applied once, refusal of a newer schema, and call detail records."""

import sqlite3

import pytest

from softswitch.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ApiKeyRecord,
    ApiKeySecret,
    CallRecord,
    LegRecord,
    SchemaTooNew,
    Store,
    WebhookEndpoint,
)


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


# -- call detail records (migration 2) -------------------------------------------------------------
T0 = 1_800_000_000.0


def leg(idx: int, role: str = "inbound", **kw) -> LegRecord:
    return LegRecord(
        idx=idx,
        role=role,
        sip_call_id=f"sip-{idx}@192.0.2.5",
        remote_uri=f"sip:peer{idx}@192.0.2.5",
        created_at=T0 + idx,
        **kw,
    )


def call(call_id: str = "call_1", created_at: float = T0, status: str = "initiated", **kw) -> CallRecord:
    return CallRecord(
        id=call_id,
        direction="inbound",
        from_uri="sip:+15550100@trunk.test",
        to_uri="sip:alice@example.test",
        status=status,
        created_at=created_at,
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "sw.db")
    yield s
    s.close()


def test_migration_2_upgrades_a_v1_file_and_keeps_its_rows(tmp_path):
    path = tmp_path / "sw.db"
    Store.open(path, migrations=MIGRATIONS[:1]).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO calls (id, direction, from_uri, to_uri, status, created_at, answered_at, ended_at, "
        "hangup_code, hangup_reason, hangup_by, data) VALUES "
        "('call_old', 'outbound', 'sip:a@x', 'sip:b@y', 'completed', 10.0, 12.0, 40.0, 200, 'BYE', 'callee', "
        "'{\"k\": 1}')"
    )
    conn.execute("INSERT INTO registrations VALUES ('alice', 'sip:alice@192.0.2.9', 99.0, 'h:1', 'udp', 'c', 1)")
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        assert store.version == SCHEMA_VERSION
        assert store.applied_migrations() == list(range(1, SCHEMA_VERSION + 1))
        assert "call_legs" in store.tables()
        assert store.get_call("call_old") == CallRecord(
            id="call_old",
            direction="outbound",
            from_uri="sip:a@x",
            to_uri="sip:b@y",
            status="completed",
            created_at=10.0,
            answered_at=12.0,
            ended_at=40.0,
            hangup_code=200,
            hangup_reason="BYE",
            hangup_by="callee",
            data={"k": 1},
        )
        assert [b.contact for b in store.bindings("alice", now=0.0)] == ["sip:alice@192.0.2.9"]
    finally:
        store.close()


def test_save_and_get_call_round_trip_with_legs_and_media(store):
    record = call(
        status="completed",
        answered_at=T0 + 3,
        ended_at=T0 + 63.5,
        hangup_code=200,
        hangup_reason="BYE",
        hangup_by="caller",
        trunk="carrier-a",
        user="alice",
        data={"tags": ["vip"], "nested": {"n": 1}},
        legs=[
            leg(0, local_tag="lt0", remote_tag="rt0", remote_addr="192.0.2.5:5060", status_code=200),
            leg(
                1,
                "outbound",
                answered_at=T0 + 3,
                ended_at=T0 + 63.5,
                media={
                    "rx_packets": 3000,
                    "tx_packets": 2990,
                    "lost": 3,
                    "loss_pct": 0.1,
                    "jitter_ms": 4.2,
                    "mos": 4.3,
                },
            ),
        ],
    )
    store.save_call(record)
    got = store.get_call("call_1")
    assert got == record
    assert got is not record
    assert got.duration_s == pytest.approx(60.5)
    assert got.ring_s == pytest.approx(3.0)
    assert store.get_call("call_missing") is None


def test_save_call_upserts_through_the_life_of_a_call(store):
    record = call(legs=[leg(0)])
    store.save_call(record)
    record.status, record.answered_at = "answered", T0 + 2
    record.legs.append(leg(1, "outbound", remote_tag="b-tag"))
    record.legs[0].status_code = 200
    store.save_call(record)
    store.save_call(record)  # idempotent
    assert store.get_call("call_1") == record
    record.status, record.ended_at, record.hangup_by = "completed", T0 + 10, "callee"
    record.legs[1].media = {"mos": 4.1}
    store.save_call(record)
    got = store.get_call("call_1")
    assert got == record
    assert len(store.list_calls()) == 1
    record.legs = [record.legs[1]]  # the record is the truth: a leg it no longer has is deleted
    store.save_call(record)
    assert [lg.idx for lg in store.get_call("call_1").legs] == [1]


def test_save_call_is_one_transaction(store):
    record = call(legs=[leg(0)])
    store.save_call(record)
    record.status = "answered"
    record.legs.append(leg(1))
    record.legs[1].sip_call_id = None  # NOT NULL fails after the call row was already updated
    with pytest.raises(sqlite3.IntegrityError):
        store.save_call(record)
    got = store.get_call("call_1")
    assert got.status == "initiated"
    assert [lg.idx for lg in got.legs] == [0]


@pytest.mark.parametrize(
    "change",
    [
        {"status": "ansered"},
        {"direction": "sideways"},
        {"hangup_by": "nobody"},
        {"legs": [leg(0, "middle")]},
        {"legs": [leg(0), leg(0)]},
    ],
)
def test_save_call_refuses_invalid_values(store, change):
    record = call()
    for key, value in change.items():
        setattr(record, key, value)
    with pytest.raises(ValueError):
        store.save_call(record)
    assert store.get_call("call_1") is None


def test_list_calls_newest_first_with_limit_before_and_status(store):
    statuses = ["completed", "failed", "completed", "busy", "completed"]
    for i, status in enumerate(statuses):
        store.save_call(call(f"call_{i}", created_at=T0 + i, status=status, ended_at=T0 + i + 1, legs=[leg(0)]))
    assert [c.id for c in store.list_calls()] == ["call_4", "call_3", "call_2", "call_1", "call_0"]
    assert [c.id for c in store.list_calls(limit=2)] == ["call_4", "call_3"]
    assert [c.id for c in store.list_calls(before=T0 + 3)] == ["call_2", "call_1", "call_0"]
    assert [c.id for c in store.list_calls(status="completed")] == ["call_4", "call_2", "call_0"]
    assert [c.id for c in store.list_calls(status="completed", before=T0 + 4, limit=1)] == ["call_2"]
    assert store.list_calls(limit=0) == []
    assert all(len(c.legs) == 1 for c in store.list_calls())


def test_open_calls_are_those_never_ended(store):
    store.save_call(call("call_done", created_at=T0, status="completed", ended_at=T0 + 5))
    store.save_call(call("call_live_new", created_at=T0 + 2, status="answered", answered_at=T0 + 3, legs=[leg(0)]))
    store.save_call(call("call_live_old", created_at=T0 + 1, status="ringing"))
    opened = store.open_calls()
    assert [c.id for c in opened] == ["call_live_old", "call_live_new"]
    assert [lg.idx for lg in opened[1].legs] == [0]
    closing = opened[0]
    closing.status, closing.ended_at, closing.hangup_by = "failed", T0 + 100, "system"
    store.save_call(closing)
    assert [c.id for c in store.open_calls()] == ["call_live_new"]


def test_call_record_survives_reopening_the_file(tmp_path):
    path = tmp_path / "sw.db"
    record = call(status="answered", answered_at=T0 + 1, legs=[leg(0, media={"rx_packets": 5})])
    store = Store.open(path)
    store.save_call(record)
    store.close()
    store = Store.open(path)
    try:
        assert store.get_call("call_1") == record
        assert [c.id for c in store.open_calls()] == ["call_1"]
    finally:
        store.close()


def test_call_durations():
    assert call().duration_s is None and call().ring_s is None
    live = call(answered_at=T0 + 4)
    assert live.duration_s is None and live.ring_s == 4
    assert call(answered_at=T0 + 4, ended_at=T0 + 10).duration_s == 6
    unanswered = call(status="no-answer", ended_at=T0 + 30)
    assert unanswered.duration_s is None and unanswered.ring_s == 30


def test_save_calls_writes_many_records_with_different_leg_counts_in_one_go(store):
    one = call("call_a", legs=[leg(0)])
    two = call("call_b", legs=[leg(0), leg(1, "outbound", media={"mos": 4.2})])
    none = call("call_c")
    store.save_calls([one, two, none])
    assert [store.get_call(r.id) for r in (one, two, none)] == [one, two, none]
    one.legs.append(leg(1, "outbound"))  # grows
    two.legs = [two.legs[1]]  # shrinks: the leg it dropped is deleted, the other record's legs stay
    two.status, two.ended_at = "completed", T0 + 9
    store.save_calls([one, two])
    assert [lg.idx for lg in store.get_call("call_a").legs] == [0, 1]
    assert [lg.idx for lg in store.get_call("call_b").legs] == [1]
    assert store.get_call("call_b") == two
    assert store.get_call("call_c") == none


# -- API keys and idempotency keys (migrations 3 and 4) ------------------------------------------------
def _key(key_id: str, created_at: float = 100.0) -> tuple:
    return (
        ApiKeyRecord(key_id, "ops", ["calls:read", "admin"], True, created_at),
        ApiKeySecret(key_id, f"sk_test_{key_id[-8:]}", "hash-" + key_id, created_at),
    )


def test_store_api_keys_roundtrip_rotate_revoke(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    try:
        assert {"api_keys", "api_key_secrets", "idempotency_keys"} <= set(store.tables())
        for i, key_id in enumerate(["key_A0000001", "key_A0000002", "key_A0000003"]):
            store.create_api_key(*_key(key_id, 100.0 + i))
        got = store.get_api_key("key_A0000001")
        assert got.scopes == ["calls:read", "admin"] and got.test is True and got.prefix == "sk_test_A0000001"
        assert got.revoked_at is None and got.previous_expires_at is None
        assert [k.id for k in store.list_api_keys(limit=2)] == ["key_A0000003", "key_A0000002"]
        assert [k.id for k in store.list_api_keys(limit=5, starting_after="key_A0000002")] == ["key_A0000001"]
        store.rotate_api_key("key_A0000001", ApiKeySecret("key_A0000001", "sk_test_NEWNEWNE", "h2", 200.0), 260.0)
        rotated = store.get_api_key("key_A0000001")
        assert rotated.prefix == "sk_test_NEWNEWNE" and rotated.previous_expires_at == 260.0
        (old,) = store.api_key_secrets("sk_test_A0000001")
        assert old[1].expires_at == 260.0 and old[0].id == "key_A0000001"
        # a second rotation never extends the first one's grace, and drops secrets already expired
        store.rotate_api_key("key_A0000001", ApiKeySecret("key_A0000001", "sk_test_THIRDTHI", "h3", 300.0), 400.0)
        assert store.api_key_secrets("sk_test_A0000001") == []
        assert store.api_key_secrets("sk_test_NEWNEWNE")[0][1].expires_at == 400.0

        assert store.revoke_api_key("key_A0000002", 500.0).revoked_at == 500.0
        assert store.revoke_api_key("key_A0000002", 600.0).revoked_at == 500.0  # first revocation stays
        assert store.revoke_api_key("key_NONE", 600.0) is None
    finally:
        store.close()


def test_store_key_webhook_secret_rotation_is_one_transaction(store):
    """The key's secret and its calls' callbacks change together: a failure half-way leaves both as they were."""
    store.create_api_key(*_key("key_W0000001"))
    old = store.key_webhook_secret("key_W0000001", lambda: "whsec_old")
    store.add_webhook_endpoint(
        WebhookEndpoint("we_cb1", "https://cb.example.com/", ["*"], True, "", old, None, None, True, 1.0, "call_1")
    )
    store._db.execute(  # the callbacks' update fails, after the key's has run
        "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON webhook_endpoints BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.rotate_key_webhook_secret("key_W0000001", "whsec_new", 99.0)
    assert store.key_webhook_secret("key_W0000001", lambda: "whsec_x") == "whsec_old"
    store._db.execute("DROP TRIGGER refuse")
    assert store.rotate_key_webhook_secret("key_W0000001", "whsec_new", 99.0)
    assert store.key_webhook_secret("key_W0000001", lambda: "whsec_x") == "whsec_new"
    assert store.get_webhook_endpoint("we_cb1").previous_secret == "whsec_old"
    assert not store.rotate_key_webhook_secret("key_NONE", "whsec_z", 99.0)


def test_store_idempotency_claim_finish_release_purge(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    try:
        assert store.claim_idempotency("key_1", "k", "fp", 1000.0, lock_s=60, ttl_s=86400) is None
        held = store.claim_idempotency("key_1", "k", "fp", 1001.0, lock_s=60, ttl_s=86400)
        assert held.state == "pending" and held.fingerprint == "fp"
        assert store.claim_idempotency("key_2", "k", "fp", 1001.0, lock_s=60, ttl_s=86400) is None  # per API key
        store.finish_idempotency("key_1", "k", 201, [("Content-Type", "application/json")], b'{"a":1}')
        done = store.claim_idempotency("key_1", "k", "other", 1002.0, lock_s=60, ttl_s=86400)
        assert (done.state, done.status, done.headers, done.body) == (
            "done",
            201,
            [("Content-Type", "application/json")],
            b'{"a":1}',
        )
        store.release_idempotency("key_1", "k")  # only pending rows are released
        assert store.get_idempotency("key_1", "k").state == "done"
        store.release_idempotency("key_2", "k")
        assert store.get_idempotency("key_2", "k") is None
        # a pending row whose holder never finished is taken over once its lock ends
        assert store.claim_idempotency("key_3", "k", "fp", 1000.0, lock_s=60, ttl_s=86400) is None
        assert store.claim_idempotency("key_3", "k", "fp", 1059.0, lock_s=60, ttl_s=86400).state == "pending"
        assert store.claim_idempotency("key_3", "k", "fp", 1060.0, lock_s=60, ttl_s=86400) is None
        assert store.purge_idempotency(1000.0 + 86399) == 0
        assert store.purge_idempotency(1000.0 + 86400) == 1
        assert store.get_idempotency("key_1", "k") is None and store.get_idempotency("key_3", "k") is not None
    finally:
        store.close()
