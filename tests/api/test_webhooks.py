"""`/v2/webhooks` over a real API server, a real SQLite store and a real dispatcher delivering to a
receiver on 127.0.0.1 that verifies each delivery with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from helpers import free_port
from standardwebhooks import Webhook

from api import webhooks as api_webhooks
from api.app import create_app
from api.auth import create_key
from softswitch import config
from softswitch.events import EventBus
from softswitch.store import Store, WebhookEndpoint
from softswitch.webhooks import EVENT_TYPES, WebhookDispatcher


class Server:
    def __init__(self, tmp_path: Path, config_text: str = "[webhooks]\nallow_private = true\n"):
        self.tmp_path = tmp_path
        self.cfg = config.parse(config_text)
        self.store = Store.open(tmp_path / "api.db")
        self.bus = EventBus()
        self.dispatcher = WebhookDispatcher(
            self.store, self.bus, allow_private=True, backoff_scale=0.002, test_of=lambda ev: ev.call_id == "call_T"
        )
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.receiver: web.AppRunner | None = None
        self.received: list[tuple[dict, dict]] = []  # (headers, payload)
        self.receiver_status = 200

    async def start(self) -> Server:
        app = create_app(self.store, self.cfg, routes=[api_webhooks.register_with(self.dispatcher)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()
        await self.dispatcher.start()
        rx = web.Application()
        rx.router.add_post("/hook", self._receive)
        self.receiver = web.AppRunner(rx, access_log=None)
        await self.receiver.setup()
        self.hook_port = free_port()
        await web.TCPSite(self.receiver, "127.0.0.1", self.hook_port).start()
        self.hook_url = f"http://127.0.0.1:{self.hook_port}/hook"
        return self

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), msgspec.json.decode(body)))
        return web.Response(status=self.receiver_status)

    async def close(self) -> None:
        await self.dispatcher.close()
        await self.session.close()
        await self.runner.cleanup()
        await self.receiver.cleanup()
        self.store.close()

    def key(self, *scopes: str, test: bool = False) -> str:
        return create_key(self.store, "k", list(scopes), test, time.time())[1]

    async def call(self, method: str, path: str, key: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.session.request(method, self.url + path, json=json, headers=headers) as resp:
            return resp.status, await resp.json()

    def publish(self, type_: str, call_id: str) -> str:
        data = {"call_id": call_id, "direction": "inbound", "from": "alice", "to": "+15550002", "status": "ringing"}
        event_id = self.bus.publish(type_, data, call_id=call_id).id
        self.dispatcher.flush()  # as at the end of the loop turn that published it
        return event_id


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = await Server(tmp_path).start()
    yield s
    await s.close()


async def until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_create_list_get_update_delete(server: Server):
    key = server.key("webhooks:write")
    status, ep = await server.call(
        "POST", "/v2/webhooks", key, {"url": server.hook_url, "events": ["call.answered"], "description": "crm"}
    )
    assert status == 201 and ep["id"].startswith("wh_") and ep["secret"].startswith("whsec_")
    assert ep["events"] == ["call.answered"] and ep["enabled"] is True
    status, got = await server.call("GET", f"/v2/webhooks/{ep['id']}", key)
    assert status == 200 and "secret" not in got and got["description"] == "crm"
    status, page = await server.call("GET", "/v2/webhooks?limit=1", key)
    assert status == 200 and [e["id"] for e in page["data"]] == [ep["id"]] and page["has_more"] is False
    status, changed = await server.call("PATCH", f"/v2/webhooks/{ep['id']}", key, {"events": ["*"], "enabled": False})
    assert status == 200 and changed["events"] == ["*"] and changed["enabled"] is False
    assert changed["description"] == "crm"
    status, _ = await server.call("DELETE", f"/v2/webhooks/{ep['id']}", key)
    assert status == 200
    status, err = await server.call("GET", f"/v2/webhooks/{ep['id']}", key)
    assert status == 404 and err["error"]["code"] == "not_found"


async def test_pagination_walks_every_endpoint(server: Server):
    key = server.key("webhooks:write")
    ids = [(await server.call("POST", "/v2/webhooks", key, {"url": server.hook_url}))[1]["id"] for _ in range(3)]
    _, first = await server.call("GET", "/v2/webhooks?limit=2", key)
    _, second = await server.call("GET", f"/v2/webhooks?limit=2&starting_after={first['data'][-1]['id']}", key)
    assert [e["id"] for e in first["data"] + second["data"]] == ids[::-1]
    assert first["has_more"] and not second["has_more"]
    status, err = await server.call("GET", "/v2/webhooks?starting_after=wh_nope", key)
    assert status == 422 and err["error"]["param_errors"][0]["param"] == "starting_after"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://x.example/"}, "url"),
        ({"url": "https://x.example/", "events": ["call.nope"]}, "events[0]"),
        ({"url": "https://x.example/", "events": []}, "events"),
        ({"url": "https://x.example/", "colour": "red"}, "colour"),
        ({}, "url"),
    ],
)
async def test_bad_bodies_name_the_param(server: Server, body: dict, param: str):
    status, err = await server.call("POST", "/v2/webhooks", server.key("webhooks:write"), body)
    assert status == 422 and err["error"]["param_errors"][0]["param"] == param, err


async def test_private_url_refused_unless_allowed(tmp_path: Path):
    key_body = {"url": "http://127.0.0.1:9/hook"}
    strict = await Server(tmp_path / "a", "").start()
    try:
        status, err = await strict.call("POST", "/v2/webhooks", strict.key("webhooks:write"), key_body)
        assert status == 422 and "allow_private" in err["error"]["param_errors"][0]["reason"]
    finally:
        await strict.close()
    relaxed = await Server(tmp_path / "b").start()
    try:
        status, _ = await relaxed.call("POST", "/v2/webhooks", relaxed.key("webhooks:write"), key_body)
        assert status == 201
    finally:
        await relaxed.close()


async def test_scope_is_webhooks_write_even_for_reads(server: Server):
    reader = server.key("calls:read", "calls:write")
    for method, path in (("GET", "/v2/webhooks"), ("GET", "/v2/webhook-event-types")):
        status, err = await server.call(method, path, reader)
        assert status == 403 and err["error"]["code"] == "forbidden"


async def test_test_and_live_keys_see_and_receive_their_own(server: Server):
    live, test = server.key("webhooks:write"), server.key("webhooks:write", test=True)
    _, live_ep = await server.call("POST", "/v2/webhooks", live, {"url": server.hook_url + "?live"})
    _, test_ep = await server.call("POST", "/v2/webhooks", test, {"url": server.hook_url + "?test"})
    _, listed = await server.call("GET", "/v2/webhooks", test)
    assert [e["id"] for e in listed["data"]] == [test_ep["id"]]
    assert (await server.call("GET", f"/v2/webhooks/{live_ep['id']}", test))[0] == 404
    server.publish("call.ringing", "call_T")  # a test call
    server.publish("call.ringing", "call_L")
    await until(lambda: len(server.received) == 2)
    for headers, payload in server.received:
        secret = test_ep["secret"] if payload["data"]["call_id"] == "call_T" else live_ep["secret"]
        Webhook(secret).verify(server.store.get_webhook_event(payload["id"]).payload, headers)
    _, test_deliveries = await server.call("GET", f"/v2/webhooks/{test_ep['id']}/deliveries", test)
    assert [d["call_id"] for d in test_deliveries["data"]] == ["call_T"]
    _, live_deliveries = await server.call("GET", f"/v2/webhooks/{live_ep['id']}/deliveries", live)
    assert [d["call_id"] for d in live_deliveries["data"]] == ["call_L"]


async def test_deliveries_log_attempts_and_redeliver_resends_the_same_id(server: Server):
    key = server.key("webhooks:write")
    _, ep = await server.call("POST", "/v2/webhooks", key, {"url": server.hook_url})
    server.receiver_status = 404  # a permanent failure: no retries
    evt = server.publish("call.answered", "call_1")
    path = f"/v2/webhooks/{ep['id']}/deliveries"

    async def deliveries() -> list[dict]:
        return (await server.call("GET", path, key))[1]["data"]

    deadline = time.monotonic() + 5
    while not (d := await deliveries()) or d[0]["status"] != "failed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    [failed] = d
    assert (failed["event_id"], failed["event_type"], failed["attempt"]) == (evt, "call.answered", 1)
    assert failed["last_status_code"] == 404 and failed["last_error"] == "HTTP 404"
    assert failed["attempts"][0]["status_code"] == 404 and failed["attempts"][0]["latency_ms"] >= 0
    server.receiver_status = 200
    status, queued = await server.call("POST", f"{path}/{failed['id']}/redeliver", key)
    assert status == 202 and queued["status"] == "pending"
    deadline = time.monotonic() + 5
    while (d := await deliveries())[0]["status"] != "delivered":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert [a["status_code"] for a in d[0]["attempts"]] == [404, 200]
    assert [h["webhook-id"] for h, _ in server.received] == [evt, evt]
    status, _ = await server.call("POST", f"{path}/whd_nope/redeliver", key)
    assert status == 404


async def test_rotation_signs_with_both_secrets_for_a_day(server: Server):
    key = server.key("webhooks:write")
    _, ep = await server.call("POST", "/v2/webhooks", key, {"url": server.hook_url})
    status, rotated = await server.call("POST", f"/v2/webhooks/{ep['id']}/rotate-secret", key)
    assert status == 200 and rotated["secret"] != ep["secret"] and rotated["secret_rotated_until"]
    await signed_by_both(server, "call_9", ep["secret"], rotated["secret"])


async def test_a_rotation_between_two_deliveries_signs_the_second_with_both(server: Server):
    key = server.key("webhooks:write")
    _, ep = await server.call("POST", "/v2/webhooks", key, {"url": server.hook_url})
    server.publish("call.ringing", "call_8")
    await until(lambda: len(server.received) == 1)  # the dispatcher has read the endpoint (and may keep it)
    status, rotated = await server.call("POST", f"/v2/webhooks/{ep['id']}/rotate-secret", key)
    assert status == 200
    server.publish("call.answered", "call_8")
    await until(lambda: len(server.received) == 2)
    headers, payload = server.received[1]
    body = server.store.get_webhook_event(payload["id"]).payload
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (ep["secret"], rotated["secret"]):
        Webhook(secret).verify(body, headers)


async def signed_by_both(server: Server, call_id: str, old: str, new: str) -> None:
    """An event of `call_id` is delivered with two signatures, one by each secret."""
    server.publish("call.ringing", call_id)
    await until(lambda: len(server.received) == 1)
    headers, payload = server.received[0]
    body = server.store.get_webhook_event(payload["id"]).payload
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)


async def test_key_secret_rotation_signs_earlier_calls_callbacks_with_both_and_new_calls_with_the_new(
    server: Server,
):
    record, key = create_key(server.store, "app", ["calls:write"], False, time.time())
    status, old = await server.call("GET", "/v2/account/webhook-secret", key)
    assert status == 200
    # call_1's status_callback, as POST /v2/calls makes it: signed with the key's secret of that moment
    callback = WebhookEndpoint(
        "wh_cb1", server.hook_url, ["*"], True, "status_callback of call_1", old["secret"], None, None, False,
        time.time(), call_id="call_1",
    )  # fmt: skip
    server.store.add_webhook_endpoint(callback)
    server.dispatcher.watch_call("call_1")
    status, new = await server.call("POST", "/v2/account/webhook-secret/rotate", key)
    assert status == 200 and new["key_id"] == record.id and new["secret"] not in (old["secret"], "")
    assert (await server.call("GET", "/v2/account/webhook-secret", key))[1]["secret"] == new["secret"]
    other_key = server.key("calls:write")
    assert (await server.call("GET", "/v2/account/webhook-secret", other_key))[1]["secret"] != new["secret"]
    await signed_by_both(server, "call_1", old["secret"], new["secret"])
    stored = server.store.get_webhook_endpoint("wh_cb1")
    assert stored.previous_expires_at is not None and stored.previous_expires_at > time.time() + 86000


async def test_event_types_carry_json_schemas(server: Server):
    status, body = await server.call("GET", "/v2/webhook-event-types", server.key("webhooks:write"))
    assert status == 200
    types = {t["type"]: t for t in body["data"]}
    assert list(types) == list(EVENT_TYPES)
    schema = types["call.answered"]["schema"]
    data_ref = schema["$defs"]["WebhookBody"]["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
    assert "answered_by" in schema["$defs"][data_ref]["properties"]


async def test_events_before_any_endpoint_are_not_kept_and_a_new_endpoint_gets_the_next(server: Server):
    server.publish("call.ringing", "call_0")  # no endpoint yet: the dispatcher remembers there is none
    key = server.key("webhooks:write")
    _, ep = await server.call("POST", "/v2/webhooks", key, {"url": server.hook_url})
    server.publish("call.answered", "call_0")
    await until(lambda: len(server.received) == 1)
    assert server.received[0][1]["type"] == "call.answered"
    await server.call("PATCH", f"/v2/webhooks/{ep['id']}", key, {"enabled": False})
    server.publish("call.completed", "call_0")
    await asyncio.sleep(0.2)
    assert len(server.received) == 1  # disabled: nothing queued for it
