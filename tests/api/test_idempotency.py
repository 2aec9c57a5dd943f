"""Idempotency-Key: replay, conflict, one execution under concurrency, persistence across a restart, expiry."""

import asyncio

THING = {"name": "a", "size": 2}


def idem(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_idempotency_same_key_same_body_replays_first_response(api):
    key = api.key("calls:write")
    first = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k1"))
    again = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k1"))
    assert first.status == again.status == 201
    assert again.body == first.body and again.headers["Location"] == first.headers["Location"] == "/v2/test/things/a"
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    assert "X-RateLimit-Remaining" in again.headers
    assert api.things.executed == 1
    other = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k2"))
    assert other.status == 201 and api.things.executed == 2
    plain = [await api.call("POST", "/v2/test/things", key=key, json=THING) for _ in range(2)]
    assert [r.status for r in plain] == [201, 201] and api.things.executed == 4


async def test_idempotency_same_key_other_body_is_409(api):
    key = api.key("calls:write")
    await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k1"))
    reply = await api.call("POST", "/v2/test/things", key=key, json={"name": "b"}, headers=idem("k1"))
    assert reply.status == 409 and reply.error["code"] == "conflict"
    assert reply.error["param_errors"][0]["param"] == "Idempotency-Key"
    reply = await api.call("DELETE", "/v2/test/things/a", key=key, headers=idem("k1"))
    assert reply.status == 409
    assert api.things.executed == 1


async def test_idempotency_keys_are_per_api_key(api):
    one, two = api.key("calls:write"), api.key("calls:write")
    await api.call("POST", "/v2/test/things", key=one, json=THING, headers=idem("shared"))
    reply = await api.call("POST", "/v2/test/things", key=two, json={"name": "z"}, headers=idem("shared"))
    assert reply.status == 201 and "Idempotent-Replayed" not in reply.headers
    assert api.things.executed == 2


async def test_idempotency_concurrent_requests_execute_once(api):
    key = api.key("calls:write")
    api.things.gate = asyncio.Event()
    first = asyncio.create_task(api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k")))
    while api.things.executed == 0:
        await asyncio.sleep(0.005)
    second = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))
    assert second.status == 409 and second.headers["Retry-After"] == "1"
    assert "still executing" in second.error["message"]
    api.things.gate.set()
    assert (await first).status == 201
    third = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))
    assert third.status == 201 and third.headers["Idempotent-Replayed"] == "true"
    assert api.things.executed == 1


async def test_idempotency_many_concurrent_requests_one_execution(api):
    key = api.key("calls:write")
    api.things.gate = asyncio.Event()
    calls = [api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("burst")) for _ in range(8)]
    tasks = [asyncio.create_task(c) for c in calls]
    await asyncio.sleep(0.2)
    api.things.gate.set()
    statuses = sorted(r.status for r in await asyncio.gather(*tasks))
    assert statuses == [201] + [409] * 7
    assert api.things.executed == 1


async def test_idempotency_validation_failure_releases_the_key(api):
    key = api.key("calls:write")
    bad = await api.call("POST", "/v2/test/things", key=key, json={"nme": "a"}, headers=idem("k"))
    assert bad.status == 422
    good = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))
    assert good.status == 201 and "Idempotent-Replayed" not in good.headers


async def test_idempotency_bad_header_is_400(api):
    reply = await api.call("POST", "/v2/test/things", key=api.admin, json=THING, headers=idem("has space"))
    assert reply.status == 400 and reply.error["param_errors"][0]["param"] == "Idempotency-Key"
    assert api.things.executed == 0


async def test_idempotency_survives_a_restart(start, tmp_path):
    db = tmp_path / "persist.db"
    api = await start(db=db)
    clock, things = api.clock, api.things
    key = api.key("calls:write")
    first = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))
    await api.close()
    api = await start(db=db, clock=clock, things=things)
    again = await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))
    assert again.status == 201 and again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert things.executed == 1


async def test_idempotency_expires_after_24_hours_and_is_purged(api):
    key = api.key("calls:write")
    await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))
    api.clock.advance(24 * 3600 - 1)
    assert (await api.call("POST", "/v2/test/things", key=key, json=THING, headers=idem("k"))).headers.get(
        "Idempotent-Replayed"
    ) == "true"
    api.clock.advance(1)
    reply = await api.call("POST", "/v2/test/things", key=key, json={"name": "new"}, headers=idem("k"))
    assert reply.status == 201 and "Idempotent-Replayed" not in reply.headers
    assert api.things.executed == 2
    api.clock.advance(24 * 3600)
    assert api.store.purge_idempotency(api.clock()) == 1
