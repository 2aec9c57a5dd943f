"""`softswitch keys create|list|revoke|rotate` as a user runs them (subprocess), against the store the config
names, and the secrets they print working (or not) against a real API server on that store."""

import re
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web
from helpers import free_port

from api.app import create_app
from softswitch import config
from softswitch.store import Store


def keys(cfg, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "softswitch", "keys", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def created(res: subprocess.CompletedProcess) -> tuple[str, str]:
    assert res.returncode == 0, res.stderr
    m = re.fullmatch(r"id: (key_[0-9A-Z]{26})\nsecret: (sk_(?:live|test)_[A-Za-z0-9_-]{43})\n", res.stdout)
    assert m, res.stdout
    return m.group(1), m.group(2)


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "sw.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "keys.db"}"\n')
    return path


async def status_of(cfg, secret: str) -> int:
    """GET /v2/account with `secret` on a real server over the config's store."""
    parsed = config.load(cfg)
    store = Store.open(parsed.store.path)
    runner = web.AppRunner(create_app(store, parsed), access_log=None)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/v2/account", headers={"Authorization": f"Bearer {secret}"}) as resp,
        ):
            return resp.status
    finally:
        await runner.cleanup()
        store.close()


async def test_cli_keys_create_list_revoke(cfg):
    key_id, secret = created(
        keys(cfg, "create", "--name", "billing app", "--scope", "calls:write", "--scope", "recordings:read")
    )
    assert secret.startswith("sk_live_")
    test_id, test_secret = created(keys(cfg, "create", "--name", "ci", "--scope", "admin", "--test"))
    assert test_secret.startswith("sk_test_")
    listing = keys(cfg, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split("\t") == ["ID", "NAME", "SCOPES", "MODE", "PREFIX", "CREATED", "STATUS"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == [test_id, key_id]  # newest first
    assert rows[1][1:5] == ["billing app", "calls:write,recordings:read", "live", secret[:16]]
    assert rows[0][3] == "test" and rows[0][6] == "active"
    assert secret not in listing.stdout and test_secret not in listing.stdout
    assert await status_of(cfg, secret) == 200

    res = keys(cfg, "revoke", key_id)
    assert res.returncode == 0 and key_id in res.stdout
    assert "revoked" in keys(cfg, "list").stdout.splitlines()[2]
    assert await status_of(cfg, secret) == 401
    assert await status_of(cfg, test_secret) == 200


async def test_cli_keys_rotate_with_grace(cfg):
    key_id, old = created(keys(cfg, "create", "--name", "n", "--scope", "calls:read"))
    same_id, new = created(keys(cfg, "rotate", key_id, "--grace", "1.5"))
    assert same_id == key_id and new != old
    rotated_at = time.time()
    assert "old secret until" in keys(cfg, "list").stdout
    assert await status_of(cfg, new) == 200
    if time.time() - rotated_at < 1.0:  # still inside the grace period
        assert await status_of(cfg, old) == 200
    time.sleep(max(0.0, rotated_at + 1.6 - time.time()))
    assert await status_of(cfg, old) == 401
    assert await status_of(cfg, new) == 200
    _, newer = created(keys(cfg, "rotate", key_id, "--grace", "0"))
    assert await status_of(cfg, new) == 401 and await status_of(cfg, newer) == 200


def test_cli_keys_errors(cfg, tmp_path):
    res = keys(cfg, "revoke", "key_NOSUCHKEY")
    assert res.returncode == 1 and res.stderr.strip() == "softswitch: no API key key_NOSUCHKEY"
    res = keys(cfg, "rotate", "key_NOSUCHKEY")
    assert res.returncode == 1 and "no API key" in res.stderr
    key_id, _ = created(keys(cfg, "create", "--name", "n", "--scope", "calls:read"))
    keys(cfg, "revoke", key_id)
    res = keys(cfg, "rotate", key_id)
    assert res.returncode == 1 and "is revoked" in res.stderr
    res = keys(cfg, "create", "--name", "n", "--scope", "calls:delete")
    assert res.returncode == 2 and "invalid choice" in res.stderr
    res = keys(cfg, "create", "--name", "  ", "--scope", "calls:read")
    assert res.returncode == 2 and "name must not be empty" in res.stderr
    live_id, _ = created(keys(cfg, "create", "--name", "n", "--scope", "calls:read"))
    res = keys(cfg, "rotate", live_id, "--grace", "-1")
    assert res.returncode == 2 and "must not be negative" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\npath = 5\n")
    res = keys(bad, "list")
    assert res.returncode == 2 and res.stderr.startswith(f"{bad}:2: store.path: Expected `str`")


def test_cli_keys_help_documents_grace():
    res = subprocess.run(
        [sys.executable, "-m", "softswitch", "keys", "rotate", "--help"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0 and "--grace SECONDS" in res.stdout and "24 h" in res.stdout
