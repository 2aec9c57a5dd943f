"""/health and /health/ready: no key needed, 200 when every check passes, 503 naming the failing ones."""

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import free_port, wait_for

from api import health


async def test_health_live_without_key(api):
    reply = await api.call("GET", "/health")
    assert reply.status == 200 and reply.body["status"] == "ok" and reply.body["uptime_s"] >= 0
    assert reply.headers["X-Request-Id"]


async def test_health_ready_all_passing(start):
    async def media() -> bool:
        return True

    api = await start(checks={"store": lambda: True, "media": media})
    reply = await api.call("GET", "/health/ready")
    assert reply.status == 200
    assert reply.body == {"status": "ready", "checks": {"store": "ok", "media": "ok"}, "failing": []}


async def test_health_ready_503_names_failing_checks(start, monkeypatch):
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.1)

    def broken() -> bool:
        raise OSError("disk on fire")

    async def slow() -> bool:
        await asyncio.sleep(10)
        return True

    api = await start(checks={"store": lambda: True, "media": lambda: False, "sip": broken, "slow": slow})
    reply = await api.call("GET", "/health/ready")
    assert reply.status == 503
    assert reply.body["status"] == "not_ready"
    assert reply.body["failing"] == ["media", "sip", "slow"]
    assert reply.body["checks"]["store"] == "ok"
    assert "disk on fire" not in str(reply.body)


async def test_health_ready_without_checks_is_ready(api):
    assert (await api.call("GET", "/health/ready")).status == 200


def test_health_ready_of_a_real_softswitch_serve(tmp_path):
    """`softswitch serve` wires the store, media and sip checks, and a key made by the CLI works on it."""
    project = Path(__file__).resolve().parents[2]
    sip, port = free_port(also_udp=True), free_port()
    cfg = tmp_path / "sw.toml"
    cfg.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip}"]\n[api]\nlisten = "127.0.0.1:{port}"\n'
        f'[store]\npath = "{tmp_path / "sw.db"}"\n'
    )
    made = subprocess.run(
        [sys.executable, "-m", "softswitch", "keys", "create", "--name", "n", "--scope", "calls:read", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=project,
    )
    secret = made.stdout.split("secret: ")[1].strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "softswitch", "serve", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=project,
    )
    try:

        def ready() -> dict | None:
            assert proc.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as resp:
                    return json.loads(resp.read())
            except OSError:
                return None

        body = wait_for(ready, timeout=15)
        assert body == {"status": "ready", "checks": {"store": "ok", "media": "ok", "sip": "ok"}, "failing": []}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/account", headers={"Authorization": f"Bearer {secret}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.loads(resp.read())["scopes"] == ["calls:read"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
