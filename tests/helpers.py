"""Helpers shared by tests (importable as `helpers`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM, also_udp: bool = False) -> int:
    """A port free on 127.0.0.1 (for TCP, and for UDP too when asked)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not also_udp:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


HOST = "127.0.0.1"


def rtp(seq: int, ts: int, ssrc: int, pt: int = 0, marker: bool = False, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def header(data: bytes) -> dict:
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    return {"marker": bool(b1 & 0x80), "pt": b1 & 0x7F, "seq": seq, "ts": ts, "ssrc": ssrc}


def far_end(host: str = HOST) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2.0)
    return s


def wait_for(predicate, timeout: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


OPENSSL_REQ = (
    "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=softswitch-test"
    " -addext subjectAltName=IP:127.0.0.1"
)


def make_cert(directory: Path, name: str = "cert") -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1 (`NAME.pem`, `NAME.key`), made by the openssl CLI
    (EC: fast to generate)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is installed by .ci/run"
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [openssl, *OPENSSL_REQ.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


def trunk_switch_config(
    tmp_path, *, switch: int, callee: int, rtp_ports: str, api_port: int, head: str = "", routes: str = ""
) -> str:
    """A softswitch config for in-process call tests: UDP SIP on `switch`, a trunk `carrier` at a SIPp
    callee on `callee` that callers on 127.0.0.1 reach as number 1000 (plus `routes`), fast retransmits,
    everything else in tmp_path. `head` goes first (sections such as [calls] or [amd])."""
    return f"""{head}
[sip]
listen = ["udp:{HOST}:{switch}"]
t1_ms = 100
[media]
rtp_ports = "{rtp_ports}"
recordings_dir = "{tmp_path / "recordings"}"
[api]
listen = "{HOST}:{api_port}"
[store]
path = "{tmp_path / "sw.db"}"
[[trunks]]
name = "carrier"
address = "{HOST}:{callee}"
inbound_from = ["{HOST}/32"]
transit = true  # the test caller plays a carrier whose calls go out again (hairpin)
ping_interval_s = 0
[[routes]]
match = "^1000$"
to = "trunk:carrier"
{routes}"""


def bench_module(name: str):
    """A module of bench/ (the generated data sets, the references), loaded by path: bench/ is not put on
    sys.path, where its api.py would hide the api package."""
    import importlib.util
    import sys
    from pathlib import Path

    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def stream_pcmu(port: int, pcm, bind_port: int, ssrc: int = 0x5151) -> None:
    """Send 8 kHz PCM16 to 127.0.0.1:`port` as PCMU RTP in real time (20 ms frames, paced by the running
    loop) from a socket bound to `bind_port`: a far end whose media comes from where the engine latches."""
    import asyncio

    from media.g711 import ulaw_encode

    audio = ulaw_encode(pcm)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
        far.bind((HOST, bind_port))
        for i in range(len(pcm) // 160):
            await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
            far.sendto(rtp(i, 160 * i, ssrc, payload=audio[i * 160 : (i + 1) * 160]), (HOST, port))


async def answered_call(svc):
    """The first answered call of an in-process softswitch (`softswitch.server.Services`), waited for."""
    import asyncio

    for _ in range(200):
        calls = [c for c in svc.calls.calls.values() if c.state == "answered"]
        if calls:
            return calls[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no call was answered")


@contextlib.asynccontextmanager
async def running_switch(
    tmp_path, switch: int, callee: int, rtp_ports: str, *, routes: str = "", head: str = "", far_end=None
):
    """An in-process softswitch (`Services`, config from `trunk_switch_config` with `head` and `routes`,
    webhooks and streams allowed to loopback) with `.url` (its API), `.key(*scopes, test=False)` (a new API
    key) and `.http` (a client session); `far_end` replaces the simulated test far end (TestFarEnd)."""
    import aiohttp

    from api.auth import create_key
    from softswitch.config import parse
    from softswitch.server import Services

    api_port = free_port()
    cfg = trunk_switch_config(
        tmp_path,
        switch=switch,
        callee=callee,
        rtp_ports=rtp_ports,
        api_port=api_port,
        routes=routes,
        head="[webhooks]\nallow_private = true\n" + head,
    )
    svc = Services(parse(cfg))
    if far_end is not None:
        svc.test_far_end = far_end
    await svc.start()
    svc.url = f"http://127.0.0.1:{api_port}"
    svc.key = lambda *scopes, test=False: create_key(svc.store, "t", list(scopes), test, svc.calls.wall())[1]
    try:
        async with aiohttp.ClientSession() as session:
            svc.http = session
            yield svc
    finally:
        await svc.close()


@contextlib.asynccontextmanager
async def http_receiver():
    """An HTTP server on 127.0.0.1 answering 204 to every POST, as a webhook receiver: (url, list of
    (headers, body bytes) received)."""
    from aiohttp import web

    got: list[tuple[dict, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://{HOST}:{port}/hook", got
    finally:
        await runner.cleanup()


async def api_request(svc, method: str, path: str, key: str, headers=None, **kw) -> tuple[int, object, dict]:
    """A request to `running_switch`'s API with `key`: (status, JSON body or audio bytes or None, headers)."""
    headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    async with svc.http.request(method, svc.url + path, headers=headers, **kw) as r:
        raw = await r.read()
        body = raw if r.content_type.startswith("audio/") else (await r.json() if raw else None)
        return r.status, body, r.headers.copy()


# -- the real `softswitch serve` process --------------------------------------------------------------
PROJECT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, sip_port: int, api_port: int, extra: str = "") -> Path:
    """A config for `softswitch serve`: SIP on UDP+TCP `sip_port`, the API on `api_port`, the store in
    tmp_path/var; `extra` appended (sections of the test's own)."""
    path = tmp_path / "sw.toml"
    path.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\n'
        f'[store]\npath = "{tmp_path / "var" / "sw.db"}"\n{extra}'
    )
    return path


def spawn(cfg: Path, *args: str) -> subprocess.Popen:
    """`softswitch serve -c cfg` as a child process (stdout and stderr piped, text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "softswitch", "serve", "-c", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )


def wait_health(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> dict:
    """Block until the API on `port` answers /health (its JSON); fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("application/json")
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.05)
    raise AssertionError("softswitch did not answer /health in time")


def stop(proc: subprocess.Popen, sig: int) -> tuple[float, str]:
    """Send `sig` and wait for the exit: (seconds it took, stderr)."""
    start = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    return time.monotonic() - start, err
