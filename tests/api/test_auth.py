"""Bearer keys over HTTP: 401 cases, 403 scope, admin implies all, /v2/keys management, rotation grace."""

import pytest

from api.auth import hash_secret, new_secret, verify_secret


def test_auth_secret_shape_and_hash_roundtrip():
    live, test = new_secret(False), new_secret(True)
    assert live.startswith("sk_live_") and test.startswith("sk_test_")
    assert len(live) - len("sk_live_") >= 32
    stored = hash_secret(live)
    assert stored.startswith("pbkdf2_sha256$") and live not in stored
    assert hash_secret(live) != stored  # salted per secret
    assert verify_secret(live, stored)
    assert not verify_secret(new_secret(False), stored)
    assert not verify_secret(live, "garbage")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer sk_live_short", "Bearer sk_live_" + "A" * 43, "Bearer nope"],
)
async def test_auth_missing_or_wrong_key_is_401(api, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = await api.call("GET", "/v2/account", headers=headers)
    assert reply.status == 401
    assert reply.error["code"] == "unauthorized"
    assert reply.error["request_id"] == reply.headers["X-Request-Id"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-RateLimit-Limit" not in reply.headers


async def test_auth_revoked_key_is_401_at_once(api):
    key = api.key("calls:read")
    account = await api.call("GET", "/v2/account", key=key)
    assert account.status == 200
    revoked = await api.call("POST", f"/v2/keys/{account.body['id']}/revoke", key=api.admin)
    assert revoked.status == 200 and revoked.body["revoked_at"].endswith("Z")
    reply = await api.call("GET", "/v2/account", key=key)
    assert reply.status == 401 and "revoked" in reply.error["message"]


async def test_auth_scope_missing_is_403_and_admin_implies_all(api):
    reader = api.key("calls:read")
    reply = await api.call("POST", "/v2/test/things", key=reader, json={"name": "a"})
    assert reply.status == 403 and reply.error["code"] == "forbidden"
    assert "calls:write" in reply.error["message"]
    assert api.things.executed == 0
    assert (await api.call("GET", "/v2/keys", key=reader)).status == 403
    writer = api.key("calls:write")
    assert (await api.call("POST", "/v2/test/things", key=writer, json={"name": "b"})).status == 201
    assert (await api.call("POST", "/v2/test/things", key=api.admin, json={"name": "c"})).status == 201
    assert (await api.call("GET", "/v2/keys", key=api.admin)).status == 200


async def test_auth_account_describes_the_key(api):
    key = api.key("recordings:read", "calls:read", test=True)
    reply = await api.call("GET", "/v2/account", key=key)
    assert reply.status == 200
    body = reply.body
    assert body["id"].startswith("key_") and body["name"] == "test key"
    assert body["scopes"] == ["calls:read", "recordings:read"] and body["test"] is True
    assert body["rate_limit"] == {
        "limit": 40,
        "remaining": int(reply.headers["X-RateLimit-Remaining"]),
        "reset": int(reply.headers["X-RateLimit-Reset"]),
    }


async def test_auth_keys_create_list_over_http(api):
    made = await api.call(
        "POST", "/v2/keys", key=api.admin, json={"name": "billing", "scopes": ["calls:read"], "test": True}
    )
    assert made.status == 201
    assert made.body["secret"].startswith("sk_test_") and made.body["prefix"] == made.body["secret"][:16]
    assert made.body["created_at"].endswith("Z")
    assert (await api.call("GET", "/v2/account", key=made.body["secret"])).body["id"] == made.body["id"]
    listed = await api.call("GET", "/v2/keys", key=api.admin)
    assert listed.body["object"] == "list" and listed.body["has_more"] is False
    assert [k["name"] for k in listed.body["data"]] == ["billing", "admin"]
    assert all("secret" not in k for k in listed.body["data"])
    page = await api.call("GET", "/v2/keys?limit=1", key=api.admin)
    assert [k["name"] for k in page.body["data"]] == ["billing"] and page.body["has_more"] is True
    after = page.body["data"][0]["id"]
    rest = await api.call("GET", f"/v2/keys?limit=1&starting_after={after}", key=api.admin)
    assert [k["name"] for k in rest.body["data"]] == ["admin"] and rest.body["has_more"] is False


async def test_auth_keys_create_rejects_unknown_scope(api):
    reply = await api.call("POST", "/v2/keys", key=api.admin, json={"name": "x", "scopes": ["calls:delete"]})
    assert reply.status == 422
    assert reply.error["param_errors"] == [{"param": "scopes[0]", "reason": "Invalid enum value 'calls:delete'"}]


async def test_auth_rotation_old_secret_works_until_grace_ends(api):
    old = api.key("calls:read")
    key_id = (await api.call("GET", "/v2/account", key=old)).body["id"]
    rotated = await api.call("POST", f"/v2/keys/{key_id}/rotate", key=api.admin, json={"grace_s": 60})
    assert rotated.status == 200
    new = rotated.body["secret"]
    assert new != old and rotated.body["id"] == key_id and rotated.body["previous_secret_expires_at"].endswith("Z")
    api.clock.advance(59)
    assert (await api.call("GET", "/v2/account", key=old)).status == 200
    assert (await api.call("GET", "/v2/account", key=new)).status == 200
    api.clock.advance(1)
    expired = await api.call("GET", "/v2/account", key=old)
    assert expired.status == 401 and "grace period has ended" in expired.error["message"]
    assert (await api.call("GET", "/v2/account", key=new)).status == 200


async def test_auth_rotation_default_grace_is_24_hours(api):
    old = api.key("calls:read")
    key_id = (await api.call("GET", "/v2/account", key=old)).body["id"]
    assert (await api.call("POST", f"/v2/keys/{key_id}/rotate", key=api.admin)).status == 200
    api.clock.advance(24 * 3600 - 1)
    assert (await api.call("GET", "/v2/account", key=old)).status == 200
    api.clock.advance(1)
    assert (await api.call("GET", "/v2/account", key=old)).status == 401


async def test_auth_rotate_or_revoke_unknown_key_is_404_and_revoked_rotate_is_409(api):
    for action in ("rotate", "revoke"):
        reply = await api.call("POST", f"/v2/keys/key_NOPE/{action}", key=api.admin)
        assert reply.status == 404 and reply.error["code"] == "not_found"
    key = api.key("calls:read")
    key_id = (await api.call("GET", "/v2/account", key=key)).body["id"]
    await api.call("POST", f"/v2/keys/{key_id}/revoke", key=api.admin)
    reply = await api.call("POST", f"/v2/keys/{key_id}/rotate", key=api.admin)
    assert reply.status == 409 and reply.error["code"] == "conflict"
