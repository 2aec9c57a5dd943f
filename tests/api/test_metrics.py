"""`/metrics` on a whole softswitch (Services in this test's loop) carrying real SIPp calls: the scrape, read
with prometheus_client's own parser, shows the completed call, the SIP messages by method and code, the
media of its legs and the API requests by route; it needs an admin key on the API, and none on the
`[api] metrics_listen` address."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
import pytest
from helpers import free_port, trunk_switch_config
from interop.sipp import run_uac, uas
from prometheus_client.parser import text_string_to_metric_families

from api.auth import create_key
from softswitch.config import parse
from softswitch.server import Services

SWITCH = 14200
CALLER = {"port": 14210, "media_port": 14220, "control_port": 14212}
CALLEE = {"port": 14230, "media_port": 14240, "control_port": 14232}
RTP_PORTS = "14250-14299"


async def start_switch(tmp_path, metrics_listen: str = "") -> Services:
    api_port = free_port()
    cfg = trunk_switch_config(tmp_path, switch=SWITCH, callee=CALLEE["port"], rtp_ports=RTP_PORTS, api_port=api_port)
    if metrics_listen:
        cfg = cfg.replace("[api]\n", f'[api]\nmetrics_listen = "{metrics_listen}"\n', 1)
    svc = Services(parse(cfg))
    await svc.start()
    svc.url = f"http://127.0.0.1:{api_port}"
    svc.key = lambda *scopes: create_key(svc.store, "t", list(scopes), False, svc.calls.wall())[1]
    return svc


@pytest.fixture
async def switch(tmp_path):
    svc = await start_switch(tmp_path)
    yield svc
    await svc.close()


async def get(url: str, key: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: (name, its labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_a_call_its_sip_messages_media_and_api_requests(switch):
    admin = switch.key("admin")
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEE) as callee:
        result = await asyncio.to_thread(run_uac, "uac_basic_rtp", f"127.0.0.1:{SWITCH}", **CALLER)
        assert result.ok, result.summary()
        await asyncio.to_thread(callee.wait, 10)
    status, _, _ = await get(f"{switch.url}/v2/calls", admin)  # also writes the records queued for the store
    assert status == 200
    [record] = switch.store.list_calls(limit=5)
    call_id = record.id
    assert (await get(f"{switch.url}/v2/calls/{call_id}", admin))[0] == 200
    assert (await get(f"{switch.url}/v2/calls/call_none", admin))[0] == 404
    assert (await get(f"{switch.url}/v2/nothing-here?x=1", admin))[0] == 404

    status, ctype, text = await get(f"{switch.url}/metrics", admin)
    assert status == 200 and ctype.startswith("text/plain")
    scrape = samples(text)
    assert value(scrape, "softswitch_calls_completed_total", status="completed") == 1
    assert value(scrape, "softswitch_calls_active") == 0
    # SIP: the caller's INVITE, ACK and BYE in; our INVITE, ACK and BYE out to the callee; 200s both ways
    for method in ("INVITE", "ACK", "BYE"):
        assert value(scrape, "softswitch_sip_requests_total", direction="in", method=method) >= 1, method
        assert value(scrape, "softswitch_sip_requests_total", direction="out", method=method) >= 1, method
    assert value(scrape, "softswitch_sip_responses_total", direction="out", code="100") >= 1
    assert value(scrape, "softswitch_sip_responses_total", direction="out", code="200") >= 2  # INVITE and BYE
    assert value(scrape, "softswitch_sip_responses_total", direction="in", code="200") >= 2
    # media: the caller's 3 s tone through the switch, echoed back by the callee
    assert value(scrape, "softswitch_media_packets_total", direction="rx") > 100
    assert value(scrape, "softswitch_media_packets_total", direction="tx") > 100
    assert value(scrape, "softswitch_media_leg_loss_ratio_count") == 2  # both legs heard media
    assert value(scrape, "softswitch_media_leg_jitter_seconds_count") == 2
    assert value(scrape, "softswitch_media_leg_jitter_seconds_bucket", le="+Inf") == 2
    # API requests by route pattern and status, never by raw URL
    assert value(scrape, "softswitch_api_requests_total", method="GET", route="/v2/calls/{id}", status="200") == 1
    assert value(scrape, "softswitch_api_requests_total", method="GET", route="/v2/calls/{id}", status="404") == 1
    assert value(scrape, "softswitch_api_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any(call_id in str(labels) for _, labels in scrape)
    assert value(scrape, "softswitch_webhook_deliveries_pending") == 0  # no endpoint: nothing queued
    assert value(scrape, "softswitch_webhook_deliveries_failed_total") == 0
    # the scrape itself is counted by the next one
    _, _, text = await get(f"{switch.url}/metrics", admin)
    assert value(samples(text), "softswitch_api_requests_total", method="GET", route="/metrics", status="200") == 1


async def test_metrics_show_the_garbage_collectors_pauses_by_generation(switch):
    admin = switch.key("admin")
    before = samples((await get(f"{switch.url}/metrics", admin))[2])
    gc.collect(1)
    after = samples((await get(f"{switch.url}/metrics", admin))[2])
    name = "softswitch_gc_pause_seconds"
    assert value(after, f"{name}_count", generation="1") >= value(before, f"{name}_count", generation="1") + 1
    assert value(after, f"{name}_sum", generation="1") > value(before, f"{name}_sum", generation="1")
    assert (
        0
        < value(after, "softswitch_gc_pause_longest_seconds", generation="1")
        <= value(after, f"{name}_sum", generation="1")
    )
    for generation in ("0", "1", "2"):
        count = value(after, f"{name}_count", generation=generation)
        assert value(after, f"{name}_bucket", generation=generation, le="+Inf") == count
    assert value(after, "softswitch_gc_live_objects") > 10_000  # start-up's, left by gcpolicy's first collection
    assert value(after, "softswitch_gc_full_collections_total") >= 1


async def test_metrics_need_an_admin_key_on_the_api(switch):
    status, ctype, body = await get(f"{switch.url}/metrics")
    assert status == 401 and ctype.startswith("application/json") and '"unauthorized"' in body
    status, _, body = await get(f"{switch.url}/metrics", switch.key("calls:read", "recordings:read"))
    assert status == 403 and '"forbidden"' in body
    status, _, body = await get(f"{switch.url}/metrics", "sk_live_not_a_key")
    assert status == 401


async def test_metrics_listen_serves_metrics_without_a_key_there_only(tmp_path):
    port = free_port()
    svc = await start_switch(tmp_path, metrics_listen=f"127.0.0.1:{port}")
    try:
        admin = svc.key("admin")
        with uas("uas_hold", calls=1, **CALLEE) as callee:
            caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
            for _ in range(200):
                live = [c for c in svc.calls.calls.values() if c.state == "answered"]
                if live:
                    break
                await asyncio.sleep(0.02)
            status, ctype, text = await get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            assert value(samples(text), "softswitch_calls_active") == 1
            async with aiohttp.ClientSession() as session:
                url = f"{svc.url}/v2/calls/{live[0].id}/hangup"
                async with session.post(url, headers={"Authorization": f"Bearer {admin}"}) as r:
                    assert r.status == 200
            await caller
            await asyncio.to_thread(callee.wait, 10)
        _, _, text = await get(f"http://127.0.0.1:{port}/metrics")
        scrape = samples(text)
        assert value(scrape, "softswitch_calls_active") == 0
        assert value(scrape, "softswitch_calls_completed_total", status="completed") == 1
        route = "/v2/calls/{id}/hangup"
        assert value(scrape, "softswitch_api_requests_total", method="POST", route=route, status="200") == 1
        assert (await get(f"http://127.0.0.1:{port}/v2/calls", admin))[0] == 404  # nothing else there
        assert (await get(f"{svc.url}/metrics"))[0] == 401  # the API's copy still wants a key
    finally:
        await svc.close()


async def test_metrics_show_the_stores_write_ahead_log_after_its_first_background_checkpoint(switch):
    admin = switch.key("admin")  # a write: frames in the WAL
    name = ("softswitch_store_wal_frames", frozenset())
    scrape = samples((await get(f"{switch.url}/metrics", admin))[2])
    for _ in range(30):  # the checkpointer's first run comes a second after start
        if name in scrape:
            break
        await asyncio.sleep(0.2)
        scrape = samples((await get(f"{switch.url}/metrics", admin))[2])
    assert name in scrape and scrape[name] >= 0
    assert switch.store.checkpointer is not None and switch.store.checkpointer.runs >= 1
    assert switch.store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # the loop's commits never do
