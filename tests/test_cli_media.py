"""`softswitch media dtmf FILE...` and `softswitch media amd FILE...` run as real processes on generated WAV
files: one JSON line per file in the DESIGN.md shape, refused files named on stderr with the reason, the
others still processed, exit code 1."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import wave
from pathlib import Path

import dtmf_signals as sig
import numpy as np
from helpers import bench_module

from media import g711

amd_data = bench_module("amd_data")

PCM, ALAW, MULAW = 1, 6, 7


def run(*files: Path | str, tool: str = "dtmf") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softswitch", "media", tool, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_pcm16(path: Path, pcm: np.ndarray, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def write_g711(path: Path, pcm: np.ndarray, tag: int) -> Path:
    """A G.711 WAV (format tag 7 mu-law or 6 A-law), which `wave` cannot write."""
    codes = (g711.ulaw_encode if tag == MULAW else g711.alaw_encode)(pcm)
    fmt = struct.pack("<HHIIHHH", tag, 1, 8000, 8000, 1, 8, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(codes)) + codes
    if len(codes) % 2:
        body += b"\0"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def signal(digits: str) -> np.ndarray:
    return sig.pcm(sig.sequence(digits, tone_ms=60, pause_ms=60, lead_ms=120))


def check_line(line: str, path: Path, digits: str) -> None:
    obj = json.loads(line)
    assert list(obj) == ["file", "digits", "events"]
    assert obj["file"] == str(path) and obj["digits"] == digits
    for event, (digit, start, end) in zip(obj["events"], sig.truth(digits, 60, 60, 120), strict=True):
        assert list(event) == ["digit", "start_ms", "end_ms"]
        assert event["digit"] == digit
        assert isinstance(event["start_ms"], int) and abs(event["start_ms"] - start) <= 4
        assert isinstance(event["end_ms"], int) and abs(event["end_ms"] - end) <= 4


def test_cli_media_dtmf_pcm16_exact_line(tmp_path):
    path = write_pcm16(tmp_path / "a.wav", sig.pcm(np.concatenate([sig.pause(120), sig.tone("1", 65)])))
    result = run(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f'{{"file": "{path}", "digits": "1", "events": [{{"digit": "1", "start_ms": 120, "end_ms": 185}}]}}\n'
    )


def test_cli_media_dtmf_pcm_mulaw_alaw(tmp_path):
    files = [
        (write_pcm16(tmp_path / "pcm.wav", signal("12#")), "12#"),
        (write_g711(tmp_path / "mu.wav", signal("*0D"), MULAW), "*0D"),
        (write_g711(tmp_path / "a.wav", signal("95A"), ALAW), "95A"),
        (write_pcm16(tmp_path / "silent.wav", np.zeros(8000, np.int16)), ""),
    ]
    result = run(*(f for f, _ in files))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == len(files)
    for line, (path, digits) in zip(lines, files, strict=True):
        check_line(line, path, digits)


def test_cli_media_dtmf_refuses_bad_files_and_keeps_going(tmp_path):
    good = write_pcm16(tmp_path / "good.wav", signal("47"))
    rate = write_pcm16(tmp_path / "rate.wav", np.zeros(1600, np.int16), rate=16000)
    stereo = write_pcm16(tmp_path / "stereo.wav", np.zeros(3200, np.int16), channels=2)
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n")
    missing = tmp_path / "missing.wav"
    good2 = write_g711(tmp_path / "good2.wav", signal("B"), MULAW)
    result = run(rate, good, stereo, text, missing, good2)
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 4
    for line, path, reason in zip(
        errors, [rate, stereo, text, missing], ["16000 Hz", "2 channels", "not a WAV", "cannot read"], strict=True
    ):
        assert line.startswith(f"softswitch: {path}: ") and reason in line
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    check_line(lines[0], good, "47")
    check_line(lines[1], good2, "B")


def test_cli_media_dtmf_refuses_8_bit_pcm(tmp_path):
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128]) * 800)
    result = run(path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"softswitch: {path}: unsupported encoding")


def test_cli_media_amd_lines_for_a_person_a_machine_with_a_beep_and_silence(tmp_path):
    cases = {c.category: c for c in amd_data.build(quick=True)}
    human, machine, silence = cases["human_short"], cases["machine_beep"], cases["silence"]
    files = [
        write_pcm16(tmp_path / "human.wav", human.pcm),
        write_g711(tmp_path / "machine.wav", machine.pcm, MULAW),
        write_g711(tmp_path / "silence.wav", silence.pcm, ALAW),
    ]
    bad = write_pcm16(tmp_path / "wideband.wav", np.zeros(1600, np.int16), rate=16000)
    result = run(files[0], bad, *files[1:], tool="amd")
    assert result.returncode == 1
    assert result.stderr.startswith(f"softswitch: {bad}: ") and "16000 Hz" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(obj) for obj in lines] == [["file", "result", "decision_ms", "beep_end_ms"]] * 3
    assert [(obj["file"], obj["result"]) for obj in lines] == [
        (str(files[0]), "human"),
        (str(files[1]), "machine"),
        (str(files[2]), "unknown"),
    ]
    assert all(isinstance(obj["decision_ms"], int) for obj in lines)
    assert lines[0]["beep_end_ms"] is None and lines[2]["beep_end_ms"] is None
    assert abs(lines[1]["beep_end_ms"] - machine.beep_end_ms) <= 300


def test_cli_media_amd_parameters_from_a_config_and_set(tmp_path):
    machine = next(c for c in amd_data.build(quick=True) if c.category == "machine_beep")
    wav = write_pcm16(tmp_path / "machine.wav", machine.pcm)
    default = json.loads(run(wav, tool="amd").stdout)
    # a greeting limit shorter than this greeting decides it earlier; --set goes over the config's
    conf = tmp_path / "sw.toml"
    base = Path(__file__).resolve().parent.parent / "configs" / "softswitch.toml"
    conf.write_text(base.read_text() + "\n[amd]\ngreeting_ms = 1000\n")
    early = json.loads(run(wav, "-c", conf, tool="amd").stdout)
    assert early["result"] == "machine" and early["decision_ms"] < default["decision_ms"]
    assert early["decision_ms"] <= machine.speech_start_ms + 1100
    later = json.loads(run(wav, "-c", conf, "--set", "greeting_ms=1500", tool="amd").stdout)
    assert later["decision_ms"] >= early["decision_ms"] + 500
    for bad, reason in (
        ("greeting_ms=0", "greeting_ms: must be between 1 and 120000"),
        ("greeting_ms=3000000000", "greeting_ms: must be between 1 and 120000"),
        ("greeting_ms=1500.5", "greeting_ms: takes an integer"),
        ("silence_threshold_dbm0=loud", "silence_threshold_dbm0: takes a number"),
    ):
        result = run(wav, "--set", bad, tool="amd")
        assert result.returncode == 2 and result.stdout == "" and reason in result.stderr
    result = run(wav, "--set", "greetings_ms=x", tool="amd")
    assert result.returncode == 2 and "greetings_ms: unknown" in result.stderr
