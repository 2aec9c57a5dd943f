"""Recordings across a crash: a `softswitch serve` killed with SIGKILL in the middle of a recorded call, then
started again on the same store and recordings directory (the rest of recording is in test_call.py)."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
from helpers import free_port, http_receiver, spawn, wait_health, write_config

from api.auth import create_key
from media.audio import salvage_wav
from softswitch.store import Store


async def _recording(http: aiohttp.ClientSession, base: str, call_id: str) -> dict | None:
    async with http.get(f"{base}/recordings", params={"call_id": call_id}) as r:
        rows = (await r.json())["data"]
    return rows[0] if rows else None


async def test_recording_cut_off_by_kill_9_is_made_whole_and_completed_at_restart(tmp_path: Path):
    sip, api = free_port(also_udp=True), free_port()
    rec_dir = tmp_path / "rec"
    cfg = write_config(tmp_path, sip, api, f'[media]\nrecordings_dir = "{rec_dir}"\n[webhooks]\nallow_private = true\n')
    store = Store.open(tmp_path / "var" / "sw.db")
    key = create_key(store, "app", ["calls:write", "recordings:read", "webhooks:write"], True, time.time())[1]
    store.close()
    base = f"http://127.0.0.1:{api}/v2"
    proc = spawn(cfg)
    try:
        async with (
            http_receiver() as (hook_url, got),
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http,
        ):
            await asyncio.to_thread(wait_health, api, proc)
            async with http.post(f"{base}/webhooks", json={"url": hook_url, "events": ["*"]}) as r:
                assert r.status == 201, await r.text()
            # the simulated far end answers +15005550006 and talks for 10 s: recorded from the answer
            body = {"to": "+15005550006", "from": "app", "record": "dual"}
            async with http.post(f"{base}/calls", json=body) as r:
                assert r.status == 201, await r.text()
                call_id = (await r.json())["id"]
            deadline = time.monotonic() + 15
            rec = None
            while rec is None or rec["status"] != "in-progress":
                assert time.monotonic() < deadline, rec
                await asyncio.sleep(0.1)
                rec = await _recording(http, base, call_id)
            path = rec_dir / f"{rec['id']}.wav"
            await asyncio.sleep(2.6)  # 2.6 s of a 10 s call recorded
            proc.kill()
            proc.communicate(timeout=10)

            on_disk = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(44)
            said = int.from_bytes(head[40:44], "little")
            assert 0 < said <= on_disk - 44  # the header covers a prefix (patched every 250 ms)

            proc = spawn(cfg)  # same store, same directory
            await asyncio.to_thread(wait_health, api, proc)
            async with http.get(f"{base}/recordings/{rec['id']}") as r:
                after = await r.json()
            deadline = time.monotonic() + 10
            while not any(json.loads(b)["type"] == "recording.ready" for _, b in got):
                assert time.monotonic() < deadline, [json.loads(b)["type"] for _, b in got]
                await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)

    assert after["status"] == "completed" and after["error"] is None, after
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        frames = w.getnframes()
        audio = np.frombuffer(w.readframes(frames), "<i2").reshape(-1, 2)
    assert len(audio) == frames and 44 + frames * 4 == path.stat().st_size == after["size"]
    assert frames * 4 >= said  # nothing the header already covered was lost
    assert 2.0 <= after["duration_s"] <= 3.2 and abs(after["duration_s"] - frames / 8000) < 0.001
    far_end = audio[:, 1].astype(float)
    assert np.sqrt(np.mean(far_end**2)) > 300  # the far end's speech-like audio, on the callee's channel
    events = [json.loads(b) for _, b in got]
    of_call = [e["type"] for e in events if e["data"].get("call_id") == call_id]
    assert of_call[-2:] == ["call.completed", "recording.ready"], of_call  # closed at the restart, in order
    ready = next(e["data"] for e in events if e["type"] == "recording.ready")
    assert (ready["recording_id"], ready["status"], ready["size"]) == (rec["id"], "completed", after["size"])


def test_salvage_wav_keeps_every_whole_frame_and_refuses_other_files(tmp_path: Path):
    path = tmp_path / "cut.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00\x02\x00" * 800)
    with path.open("r+b") as f:  # as a killed writer leaves it: header behind, half a frame at the end
        f.seek(40)
        f.write((400 * 4).to_bytes(4, "little"))
        f.seek(0, 2)
        f.write(b"\x03\x00")
    fmt, size = salvage_wav(path)
    assert (fmt.channels, fmt.rate, size) == (2, 8000, 800 * 4)
    with wave.open(str(path)) as w:
        assert w.getnframes() == 800 and w.readframes(800) == b"\x01\x00\x02\x00" * 800
    other = tmp_path / "other.bin"
    other.write_bytes(b"not a wav at all, not even close to one" * 2)
    try:
        salvage_wav(other)
    except ValueError as exc:
        assert "other.bin" in str(exc)
    else:
        raise AssertionError("salvage_wav accepted a file that is no WAV")
