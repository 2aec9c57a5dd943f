"""A headless baresip 1.0 softphone driven over ctrl_tcp, for interop tests against the softswitch.

Each peer sends an `ausine` tone and records what it receives (the `sndfile` filter dumps decoded audio), so a
test can tell, from the dominant frequency of B's recording, that B heard A's tone through the softswitch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import numpy as np

HOST = "127.0.0.1"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Modules for a headless peer: G.711, a sine source, a silent player, the per-call WAV dumper and the controls.
MODULES = ("g711.so", "ausine.so", "aubridge.so", "sndfile.so")
APP_MODULES = ("menu.so", "ctrl_tcp.so")


class BaresipError(RuntimeError):
    """A baresip peer did not do what the test asked in time."""


def module_path() -> Path:
    """Where baresip's modules are: $BARESIP_MODULE_PATH, else next to the installed binary (…/lib/baresip/modules)."""
    if env := os.environ.get("BARESIP_MODULE_PATH"):
        return Path(env)
    exe = shutil.which("baresip")
    if exe is None:
        raise BaresipError("baresip is not installed")
    prefix = Path(exe).resolve().parent.parent
    for cand in (prefix / "lib" / "baresip" / "modules", *prefix.glob("lib/*/baresip/modules")):
        if (cand / "ctrl_tcp.so").exists():
            return cand
    raise BaresipError(f"no baresip modules under {prefix}; set BARESIP_MODULE_PATH")


def available() -> bool:
    """Whether baresip and the modules this harness needs are installed (the tests assert it)."""
    try:
        mods = module_path()
    except BaresipError:
        return False
    return all((mods / m).exists() for m in (*MODULES, *APP_MODULES, "account.so"))


def account_line(
    user: str,
    domain: str,
    *,
    proxy_port: int | None = None,
    auth_user: str | None = None,
    auth_pass: str | None = None,
    regint: int = 0,
    answermode: str = "auto",
    codecs: str = "PCMU,PCMA",
    display: str | None = None,
    transport: str = "udp",
    mediaenc: str | None = None,
) -> str:
    """One line of baresip's `accounts` file (`transport` of the outbound proxy: udp, tcp or tls;
    `mediaenc` srtp-mand for SRTP with SDES keys, which needs the srtp module).

    `domain` is the AOR's host part (the REGISTER Request-URI); with `proxy_port` every request (REGISTER and
    INVITE) is sent to 127.0.0.1:proxy_port as an outbound proxy (baresip adds a Route header for it) whatever the
    domain resolves to. `regint=0` means no REGISTER at all.
    """
    aor = f"<sip:{user}@{domain}>"
    if display:
        aor = f'"{display}" {aor}'
    params = [f"answermode={answermode}", f"audio_codecs={codecs}", "dtmfmode=rtpevent", f"regint={regint}"]
    if proxy_port is not None:
        params.append(f'outbound="sip:{HOST}:{proxy_port};transport={transport}"')
    if auth_user is not None:
        params.append(f"auth_user={auth_user}")
    if auth_pass is not None:
        params.append(f"auth_pass={auth_pass}")
    if mediaenc is not None:
        params.append(f"mediaenc={mediaenc}")
    params += ["mwi=no", "pubint=0"]
    return aor + ";" + ";".join(params)


class Baresip:
    """One baresip process with its own config dir, SIP/ctrl/RTP ports, tone and recording.

    Use as a context manager (or start()/stop()). One ctrl_tcp connection is kept for the whole life of the peer:
    ctrl_tcp serves a single client and a second connection silences the first.
    """

    def __init__(
        self,
        name: str,
        tmp_path: Path,
        *,
        sip_port: int,
        ctrl_port: int,
        rtp_ports: tuple[int, int],
        account: str,
        tone_hz: int = 440,
        record_wav: Path | None = None,
        lifetime: int = 60,
        sip_trace: bool = False,
        extra_config: dict[str, str] | None = None,
        extra_modules: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.dir = Path(tmp_path) / f"baresip-{name}"
        self.snd_dir = self.dir / "snd"
        self.sip_port = sip_port
        self.ctrl_port = ctrl_port
        self.rtp_ports = rtp_ports
        self.account = account
        self.tone_hz = tone_hz
        self.record_wav = Path(record_wav) if record_wav else self.dir / f"{name}-received.wav"
        self.lifetime = lifetime
        self.sip_trace = sip_trace
        self.extra_config = extra_config or {}
        self.extra_modules = extra_modules
        self.log_path = self.dir / "baresip.log"
        self.events: list[dict] = []  # every event received, for post-mortems
        self._pending: list[dict] = []  # events not consumed by wait_event yet
        self._responses: dict[str, dict] = {}
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._token = 0
        self._log = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    def write_config(self) -> None:
        """Write config, accounts and an empty contacts file (baresip would otherwise create its defaults)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snd_dir.mkdir(exist_ok=True)
        lines = {
            "module_path": str(module_path()),
            "poll_method": "epoll",
            "sip_listen": f"{HOST}:{self.sip_port}",
            "net_interface": HOST,
            "call_local_timeout": "30",
            "call_max_calls": "4",
            "audio_player": "aubridge,nil",
            "audio_alert": "aubridge,nil",
            "audio_source": f"ausine,{self.tone_hz}",
            "ausrc_srate": "48000",  # ausine only does 48 kHz stereo; baresip resamples to the codec's 8 kHz mono
            "ausrc_channels": "2",
            "audio_buffer": "20-160",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "auenc_format": "s16",
            "audec_format": "s16",
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "1-10",
            "ctrl_tcp_listen": f"{HOST}:{self.ctrl_port}",
            "snd_path": str(self.snd_dir),
            "ringback_disabled": "yes",
            "statmode_default": "off",
        }
        lines.update(self.extra_config)
        text = "".join(f"{k}\t{v}\n" for k, v in lines.items())
        text += "".join(f"module\t{m}\n" for m in (*MODULES, *self.extra_modules))
        text += "module_tmp\taccount.so\n"
        text += "".join(f"module_app\t{m}\n" for m in APP_MODULES)
        (self.dir / "config").write_text(text)
        (self.dir / "accounts").write_text(self.account + "\n")
        (self.dir / "contacts").write_text("")

    def start(self, timeout: float = 10.0) -> Baresip:
        """Start baresip (bounded by `-t lifetime`) and connect to its ctrl_tcp."""
        self.write_config()
        cmd = ["baresip", "-f", str(self.dir), "-t", str(self.lifetime)]
        if self.sip_trace:
            cmd.append("-s")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise BaresipError(f"{self.name}: baresip exited ({self._proc.returncode}):\n{self.log_tail()}")
            try:
                self._sock = socket.create_connection((HOST, self.ctrl_port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(f"{self.name}: ctrl_tcp never listened:\n{self.log_tail()}") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"baresip-{self.name}", daemon=True)
        self._reader.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask baresip to quit (so the WAV files are closed properly), then terminate/kill it if it lingers.

        The latest received-audio dump is then copied to `record_wav`, so it is ready after the `with` block.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None and self._sock is not None:
            with contextlib.suppress(OSError, BaresipError):
                self._send({"command": "quit", "params": "", "token": "quit"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(2.0)
            self._reader = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if proc is not None and (dumps := self.dumps("dec")):  # now finalised: refresh record_wav with it
            self.record_wav.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dumps[-1], self.record_wav)

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def returncode(self) -> int | None:
        """baresip's exit status while it is still tracked (None while running or after stop())."""
        return self._proc.poll() if self._proc else None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of baresip's console output, for assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- ctrl_tcp -----------------------------------------------------------------------------------------------

    def _send(self, msg: dict) -> None:
        if self._sock is None:
            raise BaresipError(f"{self.name}: not connected")
        body = json.dumps(msg).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))

    def _read_loop(self) -> None:
        buf = b""
        sock = self._sock
        while sock is not None:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while (colon := buf.find(b":")) > 0:
                if not buf[:colon].isdigit():  # lost framing: drop what we have rather than kill the reader
                    buf = b""
                    break
                size = int(buf[:colon])
                if len(buf) < colon + 1 + size + 1:
                    break
                body, buf = buf[colon + 1 : colon + 1 + size], buf[colon + 2 + size :]
                with contextlib.suppress(ValueError):
                    self._dispatch(json.loads(body.decode(errors="replace")))
        with self._cond:
            self._cond.notify_all()

    def _dispatch(self, msg: dict) -> None:
        with self._cond:
            if msg.get("event"):
                self.events.append(msg)
                self._pending.append(msg)
            elif msg.get("response"):
                self._responses[str(msg.get("token", ""))] = msg
            self._cond.notify_all()

    def command(self, cmd: str, params: str = "", timeout: float = 5.0) -> dict:
        """Run a baresip command (`dial`, `hangup`, `reginfo`, `listcalls`, ...) and return its response.

        The response is {"response": true, "ok": bool, "data": str, "token": str}.
        """
        with self._cond:
            self._token += 1
            token = f"{self.name}-{self._token}"
        self._send({"command": cmd, "params": params, "token": token})
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BaresipError(f"{self.name}: no response to {cmd!r} within {timeout} s")
                self._cond.wait(left)
            return self._responses.pop(token)

    def wait_event(self, type: str, timeout: float = 10.0, **match: str) -> dict:
        """Wait for (and consume) the first not-yet-consumed event of this type, e.g. CALL_ESTABLISHED.

        `match` narrows it by other fields (e.g. peeruri=...). Events received before the call are kept, so a
        test can wait for something that already happened. A CALL_CLOSED while waiting for another call event
        fails at once, with its reason.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self._pending):
                    if ev.get("type") == type and all(str(ev.get(k)) == v for k, v in match.items()):
                        del self._pending[i]
                        return ev
                    if type.startswith("CALL_") and type != "CALL_CLOSED" and ev.get("type") == "CALL_CLOSED":
                        del self._pending[i]
                        raise BaresipError(f"{self.name}: call closed while waiting for {type}: {ev}")
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("type") for e in self.events]
                    raise BaresipError(f"{self.name}: no {type} within {timeout} s (events: {seen})")
                self._cond.wait(min(left, 0.5))

    def clear_events(self) -> None:
        """Forget pending events (e.g. between two calls of the same test)."""
        with self._cond:
            self._pending.clear()

    def wait_registered(self, timeout: float = 10.0) -> str:
        """Wait until the account is registered; return its `reginfo` line.

        baresip sends its first REGISTER while starting, before ctrl_tcp listens, so REGISTER_OK/REGISTER_FAIL
        are usually lost; this polls `reginfo` instead ("OK" once a 2xx came back, "ERR" after a failure, such as
        a 403 or a challenge libre cannot answer). Stray REGISTER_* events are dropped.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._pending = [e for e in self._pending if e.get("type") not in ("REGISTER_OK", "REGISTER_FAIL")]
            state, line = self.registration()
            if state == "OK":
                return line
            if state == "ERR":
                raise BaresipError(f"{self.name}: REGISTER failed: {line}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BaresipError(f"{self.name}: not registered within {timeout} s: {line}\n{self.log_tail()}")
            time.sleep(0.1)

    def registration(self) -> tuple[str, str]:
        """("OK" | "ERR" | "", line) from `reginfo` for this peer's (single) account."""
        data = _ANSI.sub("", self.command("reginfo").get("data", ""))
        line = next((ln.strip() for ln in data.splitlines() if "sip:" in ln), data.strip())
        words = line.split()
        state = next((w for w in words if w in ("OK", "ERR")), "")
        return state, line

    def dial(self, uri: str) -> dict:
        """Place a call (the INVITE goes via the account's outbound proxy, if any)."""
        resp = self.command("dial", uri)
        if not resp.get("ok"):
            raise BaresipError(f"{self.name}: dial {uri} refused: {resp}")
        return resp

    def accept(self) -> dict:
        """Answer the ringing call (only needed with answermode=manual)."""
        return self.command("accept")

    def hangup(self) -> dict:
        """Hang up the current call."""
        return self.command("hangup")

    # -- recording ----------------------------------------------------------------------------------------------

    def dumps(self, kind: str = "dec") -> list[Path]:
        """sndfile's dumps, oldest first: `dec` is what was received (decoded), `enc` what was sent."""
        return sorted(self.snd_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def collect_recording(self, timeout: float = 5.0) -> Path:
        """Copy the latest received-audio dump to `record_wav` and return it.

        sndfile names its files itself (dump-YYYY-MM-DD-HH-MM-SS-dec.wav, local time of call start) and only
        finalises the WAV header when the call's audio stream is destroyed, so call this after CALL_CLOSED.
        """
        deadline = time.monotonic() + timeout
        while True:
            dumps = self.dumps("dec")
            if dumps and dumps[-1].stat().st_size > 44:
                break
            if time.monotonic() > deadline:
                raise BaresipError(f"{self.name}: no received-audio dump in {self.snd_dir}:\n{self.log_tail()}")
            time.sleep(0.1)
        self.record_wav.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dumps[-1], self.record_wav)
        return self.record_wav


# -- audio analysis -----------------------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples in [-1, 1] and the sample rate of a 16-bit PCM or float WAV.

    Tolerates a header whose sizes were never finalised (a peer killed mid-call): the data then runs to EOF.
    """
    raw = Path(path).read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        body = raw[pos + 8 : pos + 8 + size] if size else raw[pos + 8 :]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            data = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag == 3 or (tag == 0xFFFE and bits == 32):
        samples = np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float64)
    elif bits == 16:
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2") / 32768.0
    else:
        raise ValueError(f"{path}: unsupported WAV format tag={tag} bits={bits}")
    samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
    return samples, rate


def _voiced_middle(samples: np.ndarray, rate: int, threshold: float = 0.01) -> np.ndarray:
    """The middle half of the part between the first and the last non-silent 20 ms frame."""
    frame = max(1, rate // 50)
    n = len(samples) // frame
    if n == 0:
        return samples[:0]
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > threshold)
    if len(loud) == 0:
        return samples[:0]
    voiced = samples[loud[0] * frame : (loud[-1] + 1) * frame]
    q = len(voiced) // 4
    return voiced[q : len(voiced) - q] if q else voiced


def dominant_hz(wav_path: Path, threshold: float = 0.01) -> float:
    """The strongest frequency in the middle of a recording, past leading/trailing silence (0.0 if all silent).

    Interpolated between FFT bins (Hann window, parabolic fit), so it is good to about 1 Hz on a 1 s excerpt.
    """
    samples, rate = read_wav(wav_path)
    seg = _voiced_middle(samples, rate, threshold)
    if len(seg) < rate // 10:
        return 0.0
    spec = np.abs(np.fft.rfft((seg - seg.mean()) * np.hanning(len(seg))))
    k = int(np.argmax(spec[1:])) + 1
    if 1 <= k < len(spec) - 1:
        a, b, c = np.log(spec[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        k += 0.5 * (a - c) / denom if denom else 0.0
    return float(k * rate / len(seg))


def tone_power_ratio(wav_path: Path, hz: float, band_hz: float = 20.0, threshold: float = 0.01) -> float:
    """Share (0..1) of the voiced middle's power within `band_hz` of `hz`: near 1 for a clean tone of `hz`.

    Tells "B hears A's tone" apart from "B hears A's tone mixed with its own echo or noise".
    """
    samples, rate = read_wav(wav_path)
    seg = _voiced_middle(samples, rate, threshold)
    if len(seg) < rate // 10:
        return 0.0
    power = np.abs(np.fft.rfft((seg - seg.mean()) * np.hanning(len(seg)))) ** 2
    freqs = np.fft.rfftfreq(len(seg), 1.0 / rate)
    total = float(power[1:].sum())
    return float(power[np.abs(freqs - hz) <= band_hz].sum() / total) if total else 0.0


def rms_dbfs(wav_path: Path) -> float:
    """Level of the whole recording in dBFS (-inf for digital silence), to assert that audio got through at all."""
    samples, _ = read_wav(wav_path)
    rms = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")
