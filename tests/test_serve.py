"""The real `softswitch serve` process: start, health, logs, signals, busy ports, bad config."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, make_cert, spawn, stop, wait_health, write_config

from softswitch.store import SCHEMA_VERSION

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path):
    sip, api = free_port(also_udp=True), free_port()
    cfg = write_config(tmp_path, sip, api)
    proc = spawn(cfg)
    yield proc, sip, api, tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_answers_health_and_stops_on_signal(server, sig):
    proc, sip, api, tmp_path = server
    assert wait_health(api, proc)["status"] == "ok"
    with socket.create_connection(("127.0.0.1", sip), timeout=2):
        pass  # the SIP TCP listener is bound
    assert (tmp_path / "var" / "sw.db").exists()
    elapsed, err = stop(proc, sig)
    assert proc.returncode == 0, err
    assert elapsed < 2.0
    assert "softswitch.stopped" in err and "Traceback" not in err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", api), timeout=1).close()


def test_serve_logs_one_plain_line_per_event(server):
    proc, sip, api, _ = server
    wait_health(api, proc)
    _, err = stop(proc, signal.SIGTERM)
    lines = err.strip().splitlines()
    listening = [ln for ln in lines if " sip.listening " in ln]
    assert len(listening) == 2
    assert listening[0].split()[1] == "info"
    assert f"addr=udp:127.0.0.1:{sip}" in listening[0]
    assert any(" store.opened " in ln and "schema=" in ln for ln in lines)


def test_serve_json_log_format(tmp_path):
    sip, api = free_port(also_udp=True), free_port()
    proc = spawn(write_config(tmp_path, sip, api), "--log-format", "json")
    wait_health(api, proc)
    _, err = stop(proc, signal.SIGINT)
    docs = [json.loads(line) for line in err.strip().splitlines()]
    assert {"ts", "level", "event"} <= set(docs[0])
    events = [d["event"] for d in docs]
    assert events[0] == "softswitch.starting" and events[-1] == "softswitch.stopped"
    assert {"addr": f"tcp:127.0.0.1:{sip}"}.items() <= next(
        d for d in docs if d["event"] == "sip.listening" and d["addr"].startswith("tcp")
    ).items()


def test_serve_second_start_keeps_store(tmp_path):
    sip, api = free_port(also_udp=True), free_port()
    cfg = write_config(tmp_path, sip, api)
    for _ in range(2):
        proc = spawn(cfg)
        wait_health(api, proc)
        _, err = stop(proc, signal.SIGTERM)
        assert proc.returncode == 0, err
        assert f"schema={SCHEMA_VERSION}" in err


@pytest.mark.parametrize("kind", ["udp", "tcp", "api"])
def test_serve_port_in_use_is_one_line_exit_1(tmp_path, kind):
    sip, api = free_port(also_udp=True), free_port()
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    blocker = socket.socket(socket.AF_INET, sock_type)
    blocker.bind(("127.0.0.1", api if kind == "api" else sip))
    if sock_type == socket.SOCK_STREAM:
        blocker.listen()
    try:
        proc = spawn(write_config(tmp_path, sip, api))
        _, err = proc.communicate(timeout=15)
    finally:
        blocker.close()
    assert proc.returncode == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("softswitch: ")]
    addr = f"api:127.0.0.1:{api}" if kind == "api" else f"{kind}:127.0.0.1:{sip}"
    assert errors == [f"softswitch: cannot listen on {addr}: address already in use"]
    assert "Traceback" not in err


def test_serve_refuses_bad_config_with_same_message_as_check_config(tmp_path):
    cfg = write_config(tmp_path, 5060, 8080, extra='[[routes]]\nmatch = "x"\nto = "trunk:nowhere"\n')
    proc = spawn(cfg)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 2
    assert err.strip() == f"{cfg}:9: routes[0].to: unknown trunk 'nowhere'"
    check = subprocess.run(
        [sys.executable, "-m", "softswitch", "check-config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 2 and check.stderr == err


def test_serve_refuses_newer_store_schema(tmp_path):
    import sqlite3

    sip, api = free_port(also_udp=True), free_port()
    cfg = write_config(tmp_path, sip, api)
    (tmp_path / "var").mkdir()
    conn = sqlite3.connect(tmp_path / "var" / "sw.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    proc = spawn(cfg)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert "schema version 99, newer than this softswitch knows" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["serve"], ["check-config"]])
def test_serve_help_describes_every_option(argv):
    res = subprocess.run(
        [sys.executable, "-m", "softswitch", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0
    text = res.stdout
    wanted = {
        (): ["serve", "check-config", "--version"],
        ("serve",): ["--config", "--log-format", "--log-level", "SIGTERM"],
        ("check-config",): ["FILE", "exits 2"],
    }[tuple(argv)]
    for word in wanted:
        assert word in text


def test_serve_api_over_https_with_the_configured_certificate(tmp_path):
    cert, key = make_cert(tmp_path)
    sip, api = free_port(also_udp=True), free_port()
    path = write_config(tmp_path, sip, api)
    path.write_text(path.read_text().replace("[api]\n", f'[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'))
    proc = spawn(path)
    try:
        context = ssl.create_default_context(cafile=cert)  # the client trusts exactly that certificate
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{api}/health", context=context, timeout=1) as resp:
                    assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
                    break
            except urllib.error.URLError as exc:
                assert not isinstance(exc.reason, ssl.SSLError), exc  # a handshake failure is a real failure
                assert time.monotonic() < deadline, exc
                time.sleep(0.1)
        # plain HTTP is not served there: the TLS side drops it (a reset, or a close without a response)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=2)
    finally:
        _, err = stop(proc, signal.SIGTERM)
    assert "scheme=https" in err


def test_serve_retires_start_ups_objects_from_the_collectors_walks(tmp_path):
    """`softswitch serve` owns its process: what start-up leaves is untracked after the first collection
    (softswitch/gcpolicy.py), so a full collection walks only what came after."""
    sip, api, metrics = free_port(also_udp=True), free_port(), free_port()
    cfg = write_config(tmp_path, sip, api)
    cfg.write_text(cfg.read_text().replace("[store]", f'metrics_listen = "127.0.0.1:{metrics}"\n[store]'))
    proc = spawn(cfg)
    try:
        wait_health(api, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        stop(proc, signal.SIGTERM)
    values = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("softswitch_gc_")}
    assert values["softswitch_gc_retired_objects"] > 10_000
    assert values["softswitch_gc_live_objects"] < values["softswitch_gc_retired_objects"]


def _nice_of_threads(pid: int) -> dict[int, int]:
    """Every thread's niceness (field 19 of /proc/PID/task/TID/stat, after the command name)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = task.joinpath("stat").read_text().rpartition(")")[2].split()
        out[int(task.name)] = int(fields[16])
    return out


def test_serve_runs_every_thread_at_the_configured_niceness(tmp_path):
    """`[process] nice` is set before any thread starts, so the media engine's and the others inherit it."""
    sip, api = free_port(also_udp=True), free_port()
    cfg = write_config(tmp_path, sip, api, "[process]\nnice = 5\n")
    proc = spawn(cfg)
    try:
        wait_health(api, proc)
        threads = _nice_of_threads(proc.pid)
    finally:
        _, err = stop(proc, signal.SIGTERM)
    assert len(threads) >= 3  # the event loop's, the media engine's, the store checkpointer's at least
    assert set(threads.values()) == {5}
    assert "process.nice nice=5" in err
