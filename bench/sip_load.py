"""SIP load: the call rate and the number of anchored calls `softswitch serve` holds, beside a C proxy.

SIPp calls through the switch on 127.0.0.1 (bench/sipp/uac_rtp.xml -> switch -> trunk `carrier` ->
bench/sipp/uas_answer.xml): the caller sends INVITE with SDP, the callee answers 180 then 200 with SDP, the
switch answers the caller once the callee has, and the caller then streams G.711 RTP (SIPp's rtp_stream, a
raw 8 kHz mu-law tone written at run time) through the switch to the callee, which echoes every packet
back (-rtp_echo), through the switch again. Every call is anchored: both media legs are the switch's.

Criteria, per step (one fresh switch, one fresh callee, one caller run each):
  * call rate (cps): R calls a second for S seconds, each call held `--hold-ms` with RTP flowing; the step
    holds when < 0.1 % of the calls failed (SIPp's count, plus calls that never ended), p99 of INVITE sent
    -> 180 received (SIPp's response time 1, per call in its -trace_rtt file) < 100 ms, and the calls were
    placed at >= 95 % of R (a switch that lags makes SIPp hold calls back at its -l limit).
  * concurrency (conc): N calls placed at a moderate rate and held until all N are up together for
    `--plateau` seconds; the step holds when < 0.1 % of the calls failed, SIPp saw N calls up at once, and
    the RTP loss the switch measured on its legs (sequence gaps, its call records `call_legs.media`) is
    < 0.1 % with media on every leg.
A step that has failed already (too many failed or slow calls to be undone) is stopped there.
The reference is SIPp through Kamailio as a minimal stateful proxy (tm, record_route, t_relay to the same
callee), call-rate criteria only, signalling only by default (its ceiling as a proxy: RTP would not pass
through it anyway; --ref-media adds the same RTP, end to end between the SIPp peers).

Runs:
  --quick    a few 8 s rate steps and one concurrency step, under a minute in all
  (default)  rate steps of --probe-seconds (10) up a ladder until one fails, then the largest passing rate
             confirmed for --seconds (60), stepping down if it does not hold; concurrency steps up a
             ladder with a 20 s plateau; the whole run bounded by --budget (14 minutes)
The last line is the headline: `sip_load cps=N failed_pct=X p99_invite_180_ms=X concurrent=N
ref_proxy_cps=N`, where cps is the largest rate held for the confirmation window (the probe window with
--quick), failed_pct and p99 are that step's, and concurrent the largest N held. The line before it says how
fast this shared machine was before and after the steps (10^7 Python additions, timed): read figures from
different runs with it.

CPU figures are % of one core over the step's steady window, from /proc/PID/stat utime + stime: the
switch process (all threads; its main thread is the Python event loop: SIP, call control, the store; the
media engine runs in its own thread), the SIPp pair, Kamailio (all its processes), kernel threads, and the
whole machine (from /proc/stat idle time: 100 % per core); "others" is the rest (other users of the
machine: nothing is pinned or isolated, so a busy neighbour shows there). Datagrams dropped by full receive
buffers (/proc/net/udp, per socket) are reported per step: they tell loss at the switch from loss at SIPp.
The load generators are kept from deciding the result: SIPp's SIP sockets get 4 MB buffers (-buff_size)
and the callee's RTP echo socket an 8 MB one (set from here, see start_uas).
Ports: SIP and SIPp on 16000-16999, the switch's RTP on 20000-29999.
SIPp's SDP offers no telephone-event, so with the switch's default `[calls] inband_dtmf = "auto"` every leg
listens for in-band DTMF (its bridge is tapped: each leg decoded in the media thread's tick); the
environment variable SIP_LOAD_INBAND_DTMF=never|always|auto sets it for a run.
Priority: everything runs at the default niceness; `--nice N` runs the switch at N (`[process] nice`, as
telephony servers are often run, see softswitch/priority.py) and Kamailio at the same (`nice -n`), the SIPp
peers staying at 0.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "sipp"
HOST = "127.0.0.1"  # all traffic stays on loopback
UAC_PORT, UAC_MEDIA, UAC_CTRL = 16000, 16100, 16030  # SIPp binds -mp and -mp + 2
UAS_PORT, UAS_MEDIA, UAS_CTRL = 16070, 16020, 16031
SWITCH_PORT, API_PORT, METRICS_PORT, PROXY_PORT = 16060, 16080, 16081, 16090
NICE = 0  # the switch's and Kamailio's niceness (--nice)
SWITCH_RTP = (20000, 29999)
UDP_PORTS = (UAC_PORT, UAC_MEDIA, UAC_MEDIA + 2, UAC_CTRL, UAS_PORT, UAS_MEDIA, UAS_MEDIA + 2, UAS_CTRL)
SERVICE = "1000"  # the number dialled: matches the switch's route ^[0-9]+$
TONE = "tone.ulaw"  # what uac_rtp.xml streams, in SIPp's working directory
MAX_FAILED_PCT = 0.1
MAX_P99_MS = 100.0
MAX_LOSS_PCT = 0.1
MIN_RATE_RATIO = 0.95
PACKETS_PER_S = 50  # 20 ms packets
SIPP_SIP_BUFFER = 4 << 20  # SIPp's SIP socket buffers (-buff_size): the load generators must not drop

SWITCH_LADDER = (100, 200, 250, 300, 350, 400, 500, 600, 700, 800, 1000, 1200, 1500)
PROXY_LADDER = (400, 800, 1200, 1600, 2000, 2400, 2800, 3200, 3600, 4000)
CONC_LADDER = (200, 400, 600, 800, 1000, 1200, 1500, 1800, 2100, 2400)
QUICK_SWITCH, QUICK_PROXY, QUICK_CONC = (250, 500), (1000,), (600,)

KAMAILIO_CFG = """#!KAMAILIO
# bench/sip_load.py: a minimal stateful proxy, everything to the SIPp callee
debug=1
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:{host}:{port}

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) t_relay();
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) t_relay();
        exit;
    }}
    t_check_trans();
    record_route();
    $du = "sip:{host}:{callee}";
    if (!t_relay()) sl_reply_error();
    exit;
}}
"""


class BenchError(Exception):
    """A step could not run (a process did not start, a port is taken)."""


# ------------------------------------------------------------------------------------------ processes


def udp_bound(port: int) -> bool:
    return _bound(("/proc/net/udp",), port, None)


def tcp_listening(port: int) -> bool:
    return _bound(("/proc/net/tcp",), port, "0A")


def _bound(tables: tuple[str, ...], port: int, state: str | None) -> bool:
    suffix = f":{port:04X}"
    for table in tables:
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(suffix) and (state is None or cols[3] == state):
                    return True
    return False


def _stat(path: str) -> list[bytes] | None:
    """The fields of a /proc stat file after the command name (state is [0], ppid [1], pgrp [2])."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()


TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def group_pids(pgid: int) -> list[int]:
    """Processes of a process group (the sessions we start: a SIPp, a switch, Kamailio and its children)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(f"/proc/{name}/stat")) and int(st[2]) == pgid:
            pids.append(int(name))
    return pids


def udp_drops() -> dict[tuple[int, int], int]:
    """Datagrams each UDP socket dropped (receive buffer full), by (port, inode), from /proc/net/udp."""
    out = {}
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) >= 13:
                out[(int(cols[1].rsplit(":", 1)[1], 16), int(cols[9]))] = int(cols[12])
    return out


def backlog_drops() -> int:
    """Packets the kernel dropped because a CPU's input backlog was full (loopback goes through it)."""
    with contextlib.suppress(OSError), open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f if line.strip())
    return 0


SYS_PIDFD_GETFD = 438  # the same number on every architecture (since Linux 5.6)
SO_RCVBUFFORCE = 33
ECHO_RCVBUF = 8 << 20


def force_rcvbuf(pid: int, port: int, size: int) -> str:
    """Enlarge the receive buffer of another process's UDP socket bound to `port` (pidfd_getfd, then
    SO_RCVBUFFORCE on the duplicate, which is the same socket). Returns "" or why it could not."""
    inodes = {inode for (p, inode) in udp_drops() if p == port}
    try:
        fds = [
            fd
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}
        ]
        if not fds:
            return f"no socket of pid {pid} on port {port}"
        libc = ctypes.CDLL(None, use_errno=True)
        pidfd = os.pidfd_open(pid)
        try:
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fds[0]), 0)
            if fd < 0:
                return f"pidfd_getfd: {os.strerror(ctypes.get_errno())}"
            with socket.socket(fileno=fd) as sock:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                except PermissionError:  # without CAP_NET_ADMIN: as much as net.core.rmem_max allows
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        finally:
            os.close(pidfd)
    except (OSError, AttributeError) as exc:
        return str(exc)
    return ""


def machine_idle_s() -> float:
    """Seconds all cores have been idle (idle + iowait), from /proc/stat.

    Busy time is derived from it (wall time x cores - idle): with a tickless kernel idle time is measured at
    each idle entry and exit, while the busy fields of /proc/stat are sampled at the tick and miss short
    bursts of work that wake up just after a tick and finish before the next (here, at 1000 calls a second
    through Kamailio, /proc/stat saw a tenth of the CPU time the processes themselves were charged)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:6]]
    return (vals[3] + vals[4]) / TICK


class Managed:
    """A child in its own session, output to a log file; stop() ends it and anything left in its group."""

    live: list[Managed] = []

    def __init__(self, name: str, cmd: list[str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.proc.pid
        Managed.live.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for pid in group_pids(self.pid):  # the leader if it ignored sig, and children it left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()
        if self in Managed.live:
            Managed.live.remove(self)
        return self.proc.returncode

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls.live):
            proc.stop(grace=3.0)


def wait_ready(proc: Managed, check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not proc.alive():
            raise BenchError(f"{proc.name} exited at start-up (rc={proc.proc.returncode}): {proc.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{proc.name} not ready after {timeout:g} s ({what}): {proc.log_tail()}")
        time.sleep(0.05)


class Sampler(threading.Thread):
    """CPU seconds of process groups (and one thread) every `period`, for per-window figures; every other
    sample also the drop counts of the UDP sockets (kept per socket: RTP sockets close with their call)."""

    def __init__(self, groups: dict[str, int], thread: tuple[int, int] | None = None, period: float = 0.5):
        super().__init__(name="cpu-sampler", daemon=True)
        self.groups = groups
        self.thread = thread
        self.period = period
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.drops: dict[tuple[int, int], int] = {}
        self.backlog0 = backlog_drops()
        self._halt = threading.Event()

    def sample_drops(self) -> None:
        for key, n in udp_drops().items():
            if n > self.drops.get(key, 0):
                self.drops[key] = n

    def drop_totals(self) -> dict[str, int]:
        """Datagrams dropped during the step: per named socket, the switch's RTP sockets, the backlog."""
        by_port: Counter = Counter()
        for (port, _inode), n in self.drops.items():
            by_port[port] += n
        names = {
            "switch_sip": SWITCH_PORT,
            "proxy_sip": PROXY_PORT,
            "callee_sip": UAS_PORT,
            "caller_sip": UAC_PORT,
            "callee_rtp_echo": UAS_MEDIA,
        }
        out = {name: by_port[port] for name, port in names.items()}
        out["switch_rtp"] = sum(n for port, n in by_port.items() if SWITCH_RTP[0] <= port <= SWITCH_RTP[1])
        out["backlog"] = backlog_drops() - self.backlog0
        return out

    def sample(self) -> None:
        vals = dict.fromkeys(self.groups, 0.0)
        by_pgid = {pgid: name for name, pgid in self.groups.items()}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (st := _stat(f"/proc/{entry}/stat")) and int(st[2]) in by_pgid:
                vals[by_pgid[int(st[2])]] += (int(st[11]) + int(st[12])) / TICK
        if self.thread:  # the switch's threads: its main thread, the others by name
            pid = self.thread[0]
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, ValueError):
                        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
                        name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
                        st = raw[raw.rindex(b")") + 2 :].split()
                        key = "main" if int(tid) == self.thread[1] else f"thread:{name}"
                        vals[key] = vals.get(key, 0.0) + (int(st[11]) + int(st[12])) / TICK
        if st := _stat("/proc/self/stat"):
            vals["self"] = (int(st[11]) + int(st[12])) / TICK
        vals["machine"] = time.monotonic() * CORES - machine_idle_s()
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = Path(f"/proc/{self.groups['target']}/status").read_text()
            vals["rss_mb"] = int(status.split("VmRSS:", 1)[1].split()[0]) / 1024
            vals["fds"] = len(os.listdir(f"/proc/{self.groups['target']}/fd"))
        self.samples.append((time.monotonic(), vals))

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            self.sample()
            if n % 2 == 0:
                self.sample_drops()
            n += 1
            self._halt.wait(self.period)

    def finish(self) -> None:
        self._halt.set()
        self.join(5)

    def window(self, start: float, end: float) -> dict[str, float]:
        """% of one core per group between two monotonic times (the samples nearest inside the window)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            inside = self.samples
        if len(inside) < 2:
            return {}
        (t0, a), (t1, b) = inside[0], inside[-1]
        return {k: 100.0 * (b[k] - a[k]) / (t1 - t0) for k in b if k in a}


def every_10_s(samples: list[tuple[float, dict[str, float]]], key: str, t0: float) -> list[float]:
    """The first sample of `key` in each 10 s from t0 on."""
    return [x for _, x in _firsts_by_10_s(samples, key, t0)]


def per_10_s(samples: list[tuple[float, dict[str, float]]], key: str, t0: float) -> list[float]:
    """A cumulative CPU-seconds `key` as % of a core between the first samples of consecutive 10 s slices
    (where a load that creeps up during a step shows: the first calls' transactions expiring after 32 s)."""
    firsts = _firsts_by_10_s(samples, key, t0)
    return [100.0 * (b - a) / (tb - ta) for (ta, a), (tb, b) in itertools.pairwise(firsts) if tb > ta]


def _firsts_by_10_s(samples: list[tuple[float, dict[str, float]]], key: str, t0: float) -> list[tuple[float, float]]:
    seen = [(t, v[key]) for t, v in samples if key in v and t >= t0]
    return [(t, x) for k, (t, x) in enumerate(seen) if k == 0 or int((t - t0) // 10) > int((seen[k - 1][0] - t0) // 10)]


# -------------------------------------------------------------------------------------------- targets


def switch_config(workdir: Path) -> str:
    q = json.dumps  # TOML basic strings take JSON's escapes
    return (
        f'[calls]\ninband_dtmf = "{os.environ.get("SIP_LOAD_INBAND_DTMF", "auto")}"\n\n'
        f'[sip]\nlisten = ["udp:{HOST}:{SWITCH_PORT}"]\ndomain = "sip-load.test"\n\n'
        f'[media]\nrtp_ports = "{SWITCH_RTP[0]}-{SWITCH_RTP[1]}"\nrecordings_dir = {q(str(workdir / "recordings"))}\n\n'
        f'[api]\nlisten = "{HOST}:{API_PORT}"\nmetrics_listen = "{HOST}:{METRICS_PORT}"\n\n'
        f"[store]\npath = {q(str(workdir / 'switch.db'))}\n\n"
        '[log]\nlevel = "warning"\n\n'
        f"[process]\nnice = {NICE}\n\n"
        f'[[trunks]]\nname = "carrier"\naddress = "{HOST}:{UAS_PORT}"\ntransport = "udp"\n'
        f'inbound_from = ["{HOST}/32"]\ntransit = true\n\n'
        '[[routes]]\nmatch = "^[0-9]+$"\nto = "trunk:carrier"\n'
    )


class SwitchTarget:
    """`softswitch serve` with a trunk `carrier` at the SIPp callee and every number routed to it."""

    system = "softswitch"

    def __init__(self, workdir: Path, profile: str | None = None) -> None:
        self.db = workdir / "switch.db"
        config = workdir / "switch.toml"
        config.write_text(switch_config(workdir))
        cmd = [sys.executable, "-m", "softswitch", "serve", "-c", str(config)]
        if profile == "cprofile":  # written when the switch exits on SIGTERM
            cmd[1:1] = ["-m", "cProfile", "-o", str(workdir / "switch.prof")]
        self.proc = Managed("softswitch", cmd, ROOT, workdir / "switch.log")
        wait_ready(self.proc, lambda: udp_bound(SWITCH_PORT) and tcp_listening(API_PORT), "SIP and API listening")
        self.address = f"{HOST}:{SWITCH_PORT}"

    def stop(self) -> int | None:
        return self.proc.stop(grace=10.0)

    def gc_pauses(self) -> dict[str, dict[str, float]]:
        """The collections so far by generation ("0", "1", "2"), from the switch's /metrics: count, total ms,
        longest ms. Start-up's are included: a full collection when the heap is first frozen."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{METRICS_PORT}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        found: dict[str, dict[str, float]] = {}
        for key, metric, scale in (
            ("n", "softswitch_gc_pause_seconds_count", 1),
            ("total_ms", "softswitch_gc_pause_seconds_sum", 1000),
            ("longest_ms", "softswitch_gc_pause_longest_seconds", 1000),
        ):
            for generation, value in re.findall(rf'^{metric}{{generation="(\d)"}} (\S+)$', text, re.M):
                found.setdefault(generation, {})[key] = float(value) * scale
        return found

    def log_problems(self) -> Counter:
        """Warnings and errors the switch logged (plain format: `ts level logger event k=v ...`), by event."""
        found: Counter = Counter()
        with contextlib.suppress(OSError):
            for line in self.proc.log_path.read_text(errors="replace").splitlines():
                parts = line.split(" ", 4)
                if len(parts) >= 4 and parts[1] in ("warning", "error", "critical"):
                    found[f"{parts[1]} {parts[3]}"] += 1
                elif line.startswith(("Traceback", "Exception")) or "Error:" in line[:80]:
                    found[line[:100]] += 1
        return found

    def media(self, hold_s: float) -> dict[str, float]:
        """RTP as the switch measured it on its legs of answered calls (its call records)."""
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
                calls, answered = db.execute("SELECT count(*), count(answered_at) FROM calls").fetchone()
                rows = db.execute(
                    "SELECT l.media FROM call_legs l JOIN calls c ON c.id = l.call_id WHERE c.answered_at IS NOT NULL"
                ).fetchall()
        except sqlite3.Error as exc:
            return {"error": 1.0, "db_error": str(exc)}  # type: ignore[dict-item]
        rx = lost = silent = 0
        jitter: list[float] = []
        for (text,) in rows:
            m = json.loads(text or "{}")
            rx += int(m.get("rx_packets") or 0)
            lost += int(m.get("lost") or 0)
            silent += not m.get("rx_packets")
            if m.get("jitter_ms") is not None:
                jitter.append(float(m["jitter_ms"]))
        legs = len(rows)
        return {
            "calls": calls,
            "answered": answered,
            "legs": legs,
            "silent_legs": silent,
            "loss_pct": 100.0 * lost / (rx + lost) if rx + lost else 0.0,
            "rtp_pct": 100.0 * rx / (legs * hold_s * PACKETS_PER_S) if legs and hold_s else 0.0,
            "jitter_ms": sum(jitter) / len(jitter) if jitter else 0.0,
            "jitter_max_ms": max(jitter, default=0.0),
        }


class ProxyTarget:
    """Kamailio as a stateful proxy in the foreground, its runtime dir and pid file in the step's directory."""

    system = "kamailio"

    def __init__(self, workdir: Path, binary: str) -> None:
        config = workdir / "kamailio.cfg"
        config.write_text(KAMAILIO_CFG.format(host=HOST, port=PROXY_PORT, callee=UAS_PORT))
        cmd = [binary, "-f", str(config), "-DD", "-E", "-Y", str(workdir), "-P", str(workdir / "kamailio.pid")]
        cmd += ["-w", str(workdir), "-m", "512", "-M", "16"]
        if NICE:
            cmd[:0] = ["nice", "-n", str(NICE)]  # the switch's priority, for a fair reference
        self.proc = Managed("kamailio", cmd, workdir, workdir / "kamailio.log")
        wait_ready(self.proc, lambda: udp_bound(PROXY_PORT), "SIP listening")
        time.sleep(0.3)  # its workers are forked after the socket is bound
        self.address = f"{HOST}:{PROXY_PORT}"

    def stop(self) -> int | None:
        return self.proc.stop(grace=5.0)

    def log_problems(self) -> Counter:
        found: Counter = Counter()
        with contextlib.suppress(OSError):
            for line in self.proc.log_path.read_text(errors="replace").splitlines():
                if m := re.search(r"\b(CRITICAL|ERROR|WARNING): (.*)", line):
                    found[f"{m[1].lower()} {m[2][:90]}"] += 1
        return found

    def media(self, hold_s: float) -> dict[str, float]:
        return {}


# ----------------------------------------------------------------------------------------------- SIPp


def start_py_spy(pid: int, workdir: Path, seconds: float) -> Managed:
    """py-spy sampling the switch (all threads, without pausing it) while calls are placed: folded stacks
    in `switch.pyspy` (flamegraph's input; count the frames to rank functions)."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not spy:
        raise BenchError("--profile py-spy: py-spy is not installed (pip install py-spy)")
    out = workdir / "switch.pyspy"
    cmd = [spy, "record", "--pid", str(pid), "--nonblocking", "--rate", "200", "--format", "raw"]
    cmd += ["--duration", str(max(1, int(seconds))), "--output", str(out)]
    return Managed("py-spy", cmd, workdir, workdir / "py-spy.log")


def write_tone(path: Path, seconds: float = 2.0, freq_hz: float = 1000.0, level: float = 0.25) -> None:
    """Raw 8 kHz mu-law (what rtp_stream plays), a sine tone, written at run time."""
    sys.path.insert(0, str(ROOT))
    from media.g711 import ulaw_encode

    n = round(seconds * 8000)
    pcm = array("h", (round(math.sin(2 * math.pi * freq_hz * i / 8000) * level * 32767) for i in range(n)))
    path.write_bytes(ulaw_encode(pcm))


RTP_ACTION = re.compile(r"\n\s*<nop>\s*<action>\s*<exec rtp_stream=[^>]*/>\s*</action>\s*</nop>\n")


def signalling_scenario(dst: Path) -> Path:
    """uac_rtp.xml without its rtp_stream action: the same calls, signalling only."""
    text, n = RTP_ACTION.subn("\n", (SCENARIOS / "uac_rtp.xml").read_text())
    if n != 1:
        raise BenchError("uac_rtp.xml: expected exactly one <nop> with an rtp_stream action")
    dst.write_text(text.replace('name="sip_load_uac"', 'name="sip_load_uac_signalling"'))
    return dst


def start_uas(sipp: str, workdir: Path, timeout_s: float) -> Managed:
    cmd = [sipp, "-sf", str(SCENARIOS / "uas_answer.xml"), "-i", HOST, "-p", str(UAS_PORT)]
    cmd += ["-mi", HOST, "-mp", str(UAS_MEDIA), "-rtp_echo", "-ci", HOST, "-cp", str(UAS_CTRL), "-nostdin"]
    cmd += ["-timeout", f"{math.ceil(timeout_s)}s", "-trace_stat", "-stf", "uas_stat.csv", "-fd", "1"]
    cmd += ["-trace_err", "-error_file", "uas_errors.log", "-buff_size", str(SIPP_SIP_BUFFER)]
    cmd += ["-aa"]  # answers OPTIONS (200), like a live carrier: the switch pings its trunks
    uas = Managed("sipp-uas", cmd, workdir, workdir / "uas.out")
    wait_ready(uas, lambda: udp_bound(UAS_PORT) and udp_bound(UAS_MEDIA), "SIP and media ports bound", 10.0)
    # SIPp's echo socket keeps the kernel's default receive buffer (-rtp_buffsize does not reach it): about
    # 9 ms of packets at 600 calls, so any pause of its echo thread would show up as loss that is not the
    # switch's. The load generator gets a buffer that rides out scheduling hiccups (not sustained overload).
    if why := force_rcvbuf(uas.pid, UAS_MEDIA, ECHO_RCVBUF):
        print(f"warning: could not enlarge the callee's RTP echo buffer: {why}", flush=True)
    return uas


def uac_command(sipp: str, scenario: Path, target: str, calls: int, rate: int, hold_ms: int, timeout_s: float):
    # SIPp's -l: three times the calls up at once in the steady state (its default), all of them when they
    # are meant to be up together; a switch that lags makes SIPp hold new calls back at this limit
    limit = max(1, min(calls, math.ceil(3 * rate * hold_ms / 1000) + 100))
    cmd = [sipp, "-sf", str(scenario), target, "-s", SERVICE, "-i", HOST, "-p", str(UAC_PORT)]
    cmd += ["-mi", HOST, "-mp", str(UAC_MEDIA), "-ci", HOST, "-cp", str(UAC_CTRL), "-nostdin"]
    cmd += ["-m", str(calls), "-r", str(rate), "-d", str(hold_ms), "-l", str(limit)]
    cmd += ["-timeout", f"{math.ceil(timeout_s)}s", "-timeout_error", "-recv_timeout", "10000"]
    cmd += ["-default_behaviors", "all,-abortunexp"]  # a 180 after the 200 (proxy workers) is logged, not fatal
    cmd += ["-trace_err", "-error_file", "uac_errors.log", "-trace_stat", "-stf", "uac_stat.csv", "-fd", "1"]
    cmd += ["-trace_rtt", "-rtt_freq", "1", "-buff_size", str(SIPP_SIP_BUFFER)]
    return cmd


def read_stats(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return []
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]] if rows else []


def count(row: dict[str, str], key: str) -> int:
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


def epoch(stamp: str) -> float:
    """SIPp's time fields: "date<TAB>time<TAB>epoch seconds"."""
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return math.nan


def placed_from_stats(rows: list[dict[str, str]], calls: int) -> float:
    """Calls placed per second until the last was placed (or until the last row, for a step stopped early)."""
    for r in rows:
        if count(r, "OutgoingCall(C)") >= calls or r is rows[-1]:
            elapsed = epoch(r.get("CurrentTime", "")) - epoch(r.get("StartTime", ""))
            return count(r, "OutgoingCall(C)") / elapsed if elapsed > 0 else 0.0
    return 0.0


def rtt_samples(workdir: Path) -> list[tuple[float, float]]:
    """(time ms since SIPp started, INVITE -> 180 ms) per call, from the -trace_rtt file."""
    out = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.strip().split(";")
            if len(parts) >= 3 and parts[2].strip() == "1":
                with contextlib.suppress(ValueError):
                    out.append((float(parts[0]), float(parts[1])))
    return out


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# ---------------------------------------------------------------------------------------------- steps


class Verdict:
    """Watches a running caller's files: has the step failed already, whatever the rest of it does?

    More failed calls than the allowed 0.1 % of the step's calls, or (rate steps) more than 1 % of its calls
    slower than 100 ms to the 180, cannot be undone; a step that failed is stopped there."""

    def __init__(self, workdir: Path, calls: int, kind: str) -> None:
        self.workdir = workdir
        self.max_failed = MAX_FAILED_PCT / 100 * calls
        self.max_slow = None if kind != "cps" else calls / 100
        self.slow = 0
        self._rtt: Path | None = None
        self._offset = 0
        self._partial = b""

    def decided(self) -> str:
        rows = read_stats(self.workdir / "uac_stat.csv")
        failed = count(rows[-1], "FailedCall(C)") if rows else 0
        if failed > self.max_failed:
            return f"{failed} calls failed"
        if self.max_slow is None:
            return ""
        if self._rtt is None:
            self._rtt = next(iter(self.workdir.glob("*_rtt.csv")), None)
            if self._rtt is None:
                return ""
        with contextlib.suppress(OSError), self._rtt.open("rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read()
            self._offset = f.tell()
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                parts = line.split(b";")
                with contextlib.suppress(ValueError, IndexError):
                    if parts[2].strip() == b"1" and float(parts[1]) >= MAX_P99_MS:
                        self.slow += 1
        if self.slow > self.max_slow:
            return f"{self.slow} calls took >= {MAX_P99_MS:g} ms to the 180"
        return ""


@dataclass
class Step:
    system: str
    kind: str  # "cps" or "conc"
    rate: int
    calls: int
    seconds: float  # the placing window (cps) or the plateau (conc)
    hold_ms: int
    media: bool
    successful: int = 0
    sipp_failed: int = 0
    retrans: int = 0
    unexpected: int = 0
    samples: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    placed_cps: float = 0.0
    peak_calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rtp: dict[str, float] = field(default_factory=dict)
    problems: Counter = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)
    aborted: str = ""  # why the step was stopped before SIPp finished (it had failed already)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)  # (start s, p99 ms, calls) per 10 s
    rss_mb: list[float] = field(default_factory=list)  # the target's resident memory every 10 s of the step
    main_pct: list[float] = field(default_factory=list)  # the switch's main thread, % of a core, per 10 s
    fds: list[float] = field(default_factory=list)  # the target's open file descriptors every 10 s
    gc: dict[str, dict[str, float]] = field(default_factory=dict)  # the switch's GC pauses by generation
    placed: int = 0  # calls SIPp placed
    error: str = ""
    wall_s: float = 0.0

    @property
    def failed_pct(self) -> float:
        """Calls that did not complete; for a step stopped early, SIPp's failed calls among those placed
        (a lower bound)."""
        if self.aborted:
            return 100.0 * self.sipp_failed / self.placed if self.placed else 100.0
        return 100.0 * (self.calls - self.successful) / self.calls if self.calls else 100.0

    def reasons(self) -> list[str]:
        """Why the step did not hold (empty when it held)."""
        why = []
        if self.error:
            why.append(self.error)
        if self.aborted:
            why.append(f"stopped early: {self.aborted}")
        if self.failed_pct >= MAX_FAILED_PCT:
            why.append(f"failed {self.failed_pct:.2f} %")
        if self.kind == "cps":
            if not self.p99_ms < MAX_P99_MS:
                why.append(f"p99 {self.p99_ms:g} ms")
            if self.placed_cps < MIN_RATE_RATIO * self.rate:
                why.append(f"placed {self.placed_cps:.0f} cps")
        else:
            if self.peak_calls < self.calls:
                why.append(f"only {self.peak_calls} up at once")
            if self.rtp:
                if self.rtp.get("loss_pct", 100.0) >= MAX_LOSS_PCT:
                    why.append(f"RTP loss {self.rtp.get('loss_pct', 100.0):.2f} %")
                if self.rtp.get("silent_legs", 0) > MAX_FAILED_PCT / 100 * 2 * self.calls:
                    why.append(f"{self.rtp['silent_legs']:.0f} legs without RTP")
        return why

    @property
    def held(self) -> bool:
        return not self.reasons()


@dataclass
class Bench:
    sipp: str
    kamailio: str | None
    tmp: Path
    hold_ms: int
    ref_media: bool
    deadline: float
    profile: str | None = None
    run_out: bool = False
    steps: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _n: int = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def workdir(self, label: str) -> Path:
        self._n += 1
        path = self.tmp / f"{self._n:02d}-{label}"
        path.mkdir()
        (path / TONE).hardlink_to(self.tmp / TONE)
        return path

    def run(self, system: str, kind: str, rate: int, calls: int, hold_ms: int, seconds: float) -> Step:
        """One step: a fresh target and callee, the caller run to its end, the figures collected."""
        media = system == "softswitch" or self.ref_media
        step = Step(system, kind, rate, calls, seconds, hold_ms, media)
        workdir = self.workdir(f"{system}-{kind}-{calls if kind == 'conc' else rate}")
        scenario = SCENARIOS / "uac_rtp.xml" if media else signalling_scenario(workdir / "uac_signalling.xml")
        place_s = calls / rate
        run_s = place_s + hold_ms / 1000
        target: SwitchTarget | ProxyTarget | None = None
        uas: Managed | None = None
        uac: Managed | None = None
        spy: Managed | None = None
        sampler: Sampler | None = None
        t_start = time.monotonic()
        try:
            if system == "softswitch":
                target = SwitchTarget(workdir, self.profile)
            else:
                assert self.kamailio is not None
                target = ProxyTarget(workdir, self.kamailio)
            uas = start_uas(self.sipp, workdir, run_s + 60)
            groups = {"target": target.proc.pid, "uas": uas.pid, "kernel": 0}  # kernel threads: process group 0
            cmd = uac_command(self.sipp, scenario, target.address, calls, rate, hold_ms, run_s + 30)
            uac = Managed("sipp-uac", cmd, workdir, workdir / "uac.out")
            groups["uac"] = uac.pid
            main = (target.proc.pid, target.proc.pid) if system == "softswitch" else None
            sampler = Sampler(groups, main)
            sampler.start()
            if self.profile == "py-spy" and system == "softswitch":
                spy = start_py_spy(target.proc.pid, workdir, place_s)
            t0 = time.monotonic()
            watch = Verdict(workdir, calls, kind)
            while uac.alive():
                if time.monotonic() - t0 > run_s + 45:
                    step.error = "SIPp caller past its deadline"
                    break
                step.aborted = "" if self.run_out else watch.decided()
                if step.aborted:
                    break  # the step has failed whatever happens next: spare the time
                time.sleep(1.0)
            t_end = time.monotonic()
            sampler.sample_drops()
            if not target.proc.alive():
                step.error = f"{system} exited (rc={target.proc.proc.returncode}): {target.proc.log_tail(3)}"
            sampler.finish()
            if kind == "cps":  # steady state: calls placed and ended at the same rate
                window = (t0 + min(hold_ms / 1000, place_s / 2) + 0.5, t0 + place_s)
            else:  # all N calls up
                window = (t0 + place_s + 0.5, t0 + run_s - 0.5)
            cpu = sampler.window(*window) if window[1] - window[0] >= 1 else sampler.window(t0, t_end)
            step.cpu = {
                "target": cpu.get("target", math.nan),
                "main": cpu.get("main", math.nan),
                "sipp": cpu.get("uac", 0.0) + cpu.get("uas", 0.0),
                "machine": cpu.get("machine", math.nan),
                **{k: v for k, v in cpu.items() if k.startswith("thread:")},
            }
            step.cpu["other"] = step.cpu["machine"] - sum(
                cpu.get(k, 0.0) for k in ("target", "uac", "uas", "self", "kernel")
            )
            step.cpu["kernel"] = cpu.get("kernel", math.nan)
            step.drops = sampler.drop_totals()
            step.rss_mb = every_10_s(sampler.samples, "rss_mb", t0)
            step.main_pct = per_10_s(sampler.samples, "main", t0)
            step.fds = every_10_s(sampler.samples, "fds", t0)
        except BenchError as exc:
            step.error = str(exc)
        finally:
            if sampler is not None and sampler.is_alive():
                sampler.finish()
            if spy is not None:
                spy.stop(signal.SIGINT, grace=10.0)
            if uac is not None:
                uac.stop(grace=3.0)
            if uas is not None:
                uas.stop(signal.SIGUSR1, grace=3.0)
            if target is not None:
                if hasattr(target, "gc_pauses"):
                    step.gc = target.gc_pauses()
                target.stop()
        # figures
        rows = read_stats(workdir / "uac_stat.csv")
        if rows:
            last = rows[-1]
            step.successful = count(last, "SuccessfulCall(C)")
            step.sipp_failed = count(last, "FailedCall(C)")
            step.retrans = count(last, "Retransmissions(C)")
            step.placed = count(last, "OutgoingCall(C)")
            step.peak_calls = max(count(r, "CurrentCall") for r in rows)
            step.failures = {
                k.removesuffix("(C)"): count(last, k)
                for k in last
                if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and count(last, k)
            }
        uas_rows = read_stats(workdir / "uas_stat.csv")
        if uas_rows:
            step.retrans += count(uas_rows[-1], "Retransmissions(C)")
        with contextlib.suppress(OSError):
            step.unexpected = (workdir / "uac_errors.log").read_text(errors="replace").count("unexpected message")
        samples = rtt_samples(workdir)
        step.samples = len(samples)
        rtts = [r for _, r in samples]
        step.p50_ms, step.p99_ms = percentile(rtts, 50), percentile(rtts, 99)
        sent = [t - r for t, r in samples]
        if kind == "cps" and sent and seconds >= 30:  # INVITE -> 180 by 10 s of the step: does it drift?
            first = min(sent)
            buckets: dict[int, list[float]] = {}
            for (_, r), s in zip(samples, sent, strict=True):
                buckets.setdefault(int((s - first) // 10_000), []).append(r)
            step.timeline = [(10.0 * k, percentile(v, 99), len(v)) for k, v in sorted(buckets.items())]
        if not step.aborted and len(sent) >= max(2, 0.9 * calls) and max(sent) > min(sent):
            step.placed_cps = (calls - 1) / ((max(sent) - min(sent)) / 1000)
        elif calls == 1 or (len(sent) >= 2 and max(sent) == min(sent)):
            step.placed_cps = float(rate)
        else:  # from the per-second statistics: when the last call was placed (1 s resolution)
            step.placed_cps = placed_from_stats(rows, calls)
        if target is not None:
            step.problems = target.log_problems()
            if kind == "conc" or media:
                step.rtp = target.media(hold_ms / 1000)
        step.wall_s = time.monotonic() - t_start
        return step


# ----------------------------------------------------------------------------------------------- search

HEADER = (
    f"{'system':<11}{'step':<5}{'target':>7}{'calls':>7}{'failed%':>9}{'p50ms':>7}{'p99ms':>7}{'placed':>8}"
    f"{'peak':>6}{'retr':>6}{'unexp':>6}{'loss%':>7}{'rtp%':>6}{'cpu%':>7}{'main%':>7}{'sipp%':>7}"
    f"{'kern%':>6}{'othr%':>6}{'mach%':>6}  wall result"
)


def fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def row(step: Step) -> str:
    target = f"{step.calls}" if step.kind == "conc" else f"{step.rate}/s"
    rtp = step.rtp
    why = step.reasons()
    verdict = f"{step.wall_s:3.0f}s " + ("held" if not why else "FAILED: " + "; ".join(why))
    return (
        f"{step.system:<11}{step.kind:<5}{target:>7}{step.calls:>7}{step.failed_pct:>9.3f}{fmt(step.p50_ms, '.0f'):>7}"
        f"{fmt(step.p99_ms, '.0f'):>7}{step.placed_cps:>8.0f}{step.peak_calls:>6}{step.retrans:>6}{step.unexpected:>6}"
        f"{fmt(rtp.get('loss_pct', math.nan), '.3f'):>7}{fmt(rtp.get('rtp_pct', math.nan), '.0f'):>6}"
        f"{fmt(step.cpu.get('target', math.nan), '.0f'):>7}{fmt(step.cpu.get('main', math.nan), '.0f'):>7}"
        f"{fmt(step.cpu.get('sipp', math.nan), '.0f'):>7}{fmt(step.cpu.get('kernel', math.nan), '.0f'):>6}"
        f"{fmt(step.cpu.get('other', math.nan), '.0f'):>6}{fmt(step.cpu.get('machine', math.nan), '.0f'):>6}  {verdict}"
    )


def show(bench: Bench, step: Step) -> Step:
    bench.steps.append(step)
    print(row(step), flush=True)
    dropped = {k: n for k, n in step.drops.items() if n}
    if dropped:
        print(f"{'':16}UDP datagrams dropped (receive buffers full): {dropped}", flush=True)
    if not step.held:
        if step.failures:
            print(f"{'':16}SIPp failures: {step.failures}", flush=True)
        for what, n in step.problems.most_common(4):
            print(f"{'':16}{step.system} log: {n} x {what}", flush=True)
    if step.timeline:
        drift = ", ".join(f"{p99:.0f}" for _, p99, _ in step.timeline)
        rss = ", ".join(f"{m:.0f}" for m in step.rss_mb)
        print(f"{'':16}p99 INVITE->180 by 10 s of the step (ms): {drift}", flush=True)
        print(f"{'':16}{step.system} resident memory every 10 s (MB): {rss}", flush=True)
        if step.main_pct:
            main = ", ".join(f"{m:.0f}" for m in step.main_pct)
            print(f"{'':16}{step.system} main thread by 10 s of the step (% of a core): {main}", flush=True)
    return step


def cps_search(
    bench: Bench, system: str, ladder: tuple[int, ...], probe_s: float, confirm_s: float | None, reserve: float = 0
):
    """Probe the ladder until a rate fails; then confirm the largest passing rate for confirm_s, stepping
    down the passing rates until one holds. Returns (the headline step or None, the passing probes).
    `reserve`: seconds of the budget kept for the phases after this one."""
    hold = bench.hold_ms
    passing: list[Step] = []
    for rate in ladder:
        need = probe_s + hold / 1000 + 8 + (confirm_s + 10 if confirm_s else 0)
        if bench.left() - reserve < need:
            bench.skipped.append(f"{system} {rate} cps and above: not enough time left in the budget")
            break
        step = show(bench, bench.run(system, "cps", rate, max(1, round(rate * probe_s)), hold, probe_s))
        if not step.held:
            break
        passing.append(step)
    if not confirm_s:
        return (passing[-1] if passing else None), passing
    # from the top passing probe down; after a failed confirmation, once the midpoint of the gap to the
    # next passing probe (to a multiple of 25), then that probe
    rates = [p.rate for p in passing]
    rate, midpoint = (rates[-1] if rates else 0), False
    while rate:
        if bench.left() - reserve < confirm_s + hold / 1000 + 10:
            bench.skipped.append(f"{system} {rate} cps for {confirm_s:g} s: not enough time left")
            break
        step = show(bench, bench.run(system, "cps", rate, round(rate * confirm_s), hold, confirm_s))
        if step.held:
            return step, passing
        lower = [r for r in rates if r < rate]
        if not lower:
            break
        mid = round((lower[-1] + rate) / 2 / 25) * 25
        rate, midpoint = (mid, True) if not midpoint and lower[-1] < mid < rate else (lower[-1], False)
    return None, passing


def conc_search(
    bench: Bench, ladder: tuple[int, ...], ramp_cps: int, plateau_s: float, reserve: float = 0
) -> Step | None:
    best = None
    for calls in ladder:
        place_s = calls / ramp_cps
        hold_ms = round((place_s + plateau_s) * 1000)
        if bench.left() - reserve < place_s + hold_ms / 1000 + 10:
            bench.skipped.append(f"softswitch {calls} concurrent calls and above: not enough time left")
            break
        step = show(bench, bench.run("softswitch", "conc", ramp_cps, calls, hold_ms, plateau_s))
        if not step.held:
            break
        best = step
    return best


# ----------------------------------------------------------------------------------------------- main


def check_ports() -> list[str]:
    taken = [f"udp {p}" for p in (*UDP_PORTS, SWITCH_PORT, PROXY_PORT) if udp_bound(p)]
    return taken + [f"tcp {p}" for p in (API_PORT, METRICS_PORT) if tcp_listening(p)]


def rtp_ports_in_use() -> int:
    n = 0
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            port = int(line.split()[1].rsplit(":", 1)[1], 16)
            n += SWITCH_RTP[0] <= port <= SWITCH_RTP[1]
    return n


def find_binary(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def ladder_arg(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip()) if text else default


def gc_text(gc: dict[str, dict[str, float]]) -> str:
    """The switch's garbage-collector pauses in a step, by generation (start-up's included), or "" when not
    read. With the heap frozen every second (softswitch/gcpolicy.py) a busy switch should show no young ones."""
    if not gc:
        return ""
    parts = [
        f"gen{g} {v['n']:.0f} pauses, {v.get('total_ms', 0):.0f} ms in all, longest {v.get('longest_ms', 0):.0f} ms"
        for g, v in sorted(gc.items())
        if v.get("n", 0)
    ]
    return "; GC " + ("; ".join(parts) if parts else "no pauses")


def threads_text(cpu: dict[str, float]) -> str:
    """The switch's CPU by thread: main, then the other threads by name (% of one core)."""
    parts = [f"main {fmt(cpu.get('main', math.nan), '.0f')}"]
    others = sorted(
        ((k.removeprefix("thread:"), v) for k, v in cpu.items() if k.startswith("thread:")), key=lambda x: -x[1]
    )
    parts += [f"{name} {v:.0f}" for name, v in others if v >= 0.5]
    return "threads %: " + ", ".join(parts)


def headline_figures(best: Step | None, steps: list[Step], system: str) -> tuple[int, float, float]:
    """(rate, failed %, p99) of the headline step; when no rate held, cps 0 with the figures of the lowest
    rate tried for the longest window (what failed)."""
    if best is not None:
        return best.rate, best.failed_pct, best.p99_ms
    tried = [s for s in steps if s.system == system and s.kind == "cps"]
    if not tried:
        return 0, 100.0, math.nan
    longest = max(s.seconds for s in tried)
    lowest = min((s for s in tried if s.seconds == longest), key=lambda s: s.rate)
    return 0, lowest.failed_pct, lowest.p99_ms


_SPEED_PROBE = compile("s = 0\nfor i in range(10**7):\n    s += i\n", "<speed>", "exec")


def vm_speed_s() -> float:
    """Seconds for 10**7 Python additions at module level (global variables, as `python -c` runs them, the
    figure the notes and the README quote): this shared VM's speed moves every figure here by a third from hour
    to hour (0.82 s on a fast moment, 1.6 s on a slow one), so each run says how fast the machine was."""
    started = time.perf_counter()
    exec(_SPEED_PROBE, {})  # our own constant code
    return time.perf_counter() - started


def main() -> int:
    global NICE  # read by switch_config and ProxyTarget
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few 8 s steps, under a minute")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the headline rate must hold (60)")
    ap.add_argument("--probe-seconds", type=float, help="rate steps of the search (10; 8 with --quick)")
    ap.add_argument("--hold-ms", type=int, default=1000, help="call length in rate steps, RTP flowing (1000)")
    ap.add_argument("--plateau", type=float, help="seconds all N calls are up in concurrency steps (20; 3 quick)")
    ap.add_argument("--ramp-cps", type=int, default=200, help="call rate that builds up concurrency steps (200)")
    ap.add_argument("--rates", help="switch rate ladder, comma-separated")
    ap.add_argument("--ref-rates", help="Kamailio rate ladder, comma-separated")
    ap.add_argument("--conc", help="concurrency ladder, comma-separated")
    ap.add_argument("--skip-ref", action="store_true", help="no Kamailio reference")
    ap.add_argument("--skip-cps", action="store_true", help="no call-rate steps for the switch")
    ap.add_argument("--skip-conc", action="store_true", help="no concurrency steps")
    ap.add_argument("--ref-media", action="store_true", help="the reference's callers send RTP too")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (840; 75 with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs, SIPp files)")
    ap.add_argument(
        "--run-out",
        action="store_true",
        help="run every step to its end even when it has failed already (CPU figures and profiles of a full step)",
    )
    ap.add_argument(
        "--profile",
        choices=("py-spy", "cprofile"),
        help="profile the switch in each step (py-spy: sampled while calls are placed, in switch.pyspy; "
        "cprofile: the whole run, in switch.prof); implies --keep",
    )
    ap.add_argument("--nice", type=int, default=NICE, help="the switch's and Kamailio's niceness (0)")
    args = ap.parse_args()
    NICE = args.nice

    quick = args.quick
    probe_s = args.probe_seconds or (8.0 if quick else 10.0)
    confirm_s = None if quick else args.seconds
    plateau = args.plateau or (3.0 if quick else 20.0)
    budget = args.budget or (75.0 if quick else 840.0)
    sw_ladder = ladder_arg(args.rates, QUICK_SWITCH if quick else SWITCH_LADDER)
    ref_ladder = ladder_arg(args.ref_rates, QUICK_PROXY if quick else PROXY_LADDER)
    conc_ladder = ladder_arg(args.conc, QUICK_CONC if quick else CONC_LADDER)

    sipp = find_binary("sipp")
    if not sipp:
        print("sip_load: sipp is not installed (Debian: apt-get install sip-tester)")
        print("sip_load cps=0 failed_pct=100 p99_invite_180_ms=nan concurrent=0 ref_proxy_cps=0")
        return 2
    kamailio = None if args.skip_ref else find_binary("kamailio")
    taken = check_ports()
    if taken:
        print(f"sip_load: ports needed by the bench are in use: {', '.join(taken)}")
        print("sip_load cps=0 failed_pct=100 p99_invite_180_ms=nan concurrent=0 ref_proxy_cps=0")
        return 2

    def on_signal(signum: int, _frame) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    speed_before = vm_speed_s()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sip_load_"))
    bench = Bench(
        sipp, kamailio, tmp, args.hold_ms, args.ref_media, time.monotonic() + budget, args.profile, args.run_out
    )
    cores = os.cpu_count() or 1
    print(
        f"sip_load: SIPp -> softswitch (B2BUA, RTP anchored) -> SIPp on {HOST}, {cores} cores, nothing pinned; "
        f"rate steps {probe_s:g} s"
        + (f", the best confirmed for {confirm_s:g} s" if confirm_s else "")
        + f", calls held {args.hold_ms} ms with RTP both ways;\n"
        f"concurrency steps: N calls placed at 3/4 of the best rate (at most {args.ramp_cps}/s), "
        f"all up for {plateau:g} s;\n"
        f"held = failed < {MAX_FAILED_PCT} % and p99 INVITE->180 < {MAX_P99_MS:g} ms (rates), "
        f"RTP loss < {MAX_LOSS_PCT} % (concurrency)"
    )
    if kamailio:
        print(
            f"reference: SIPp -> Kamailio stateful proxy (children=2) -> SIPp, "
            f"{'with the same RTP end to end' if args.ref_media else 'signalling only'}, the same rate criteria"
        )
    elif not args.skip_ref:
        print("reference: kamailio not installed (Debian: apt-get install kamailio); skipped")
    if (busy := rtp_ports_in_use()) > 0:
        print(f"warning: {busy} UDP ports of the switch's RTP range {SWITCH_RTP[0]}-{SWITCH_RTP[1]} already in use")
    print(
        "failed%: calls that did not complete; p50/p99: INVITE sent -> 180 received (ms, SIPp resolution 1 ms);\n"
        "placed: call rate SIPp achieved; peak: most calls up at once; retr: SIP retransmissions (both SIPp);\n"
        "unexp: messages out of order (a 180 after the 200); loss%, rtp%: RTP lost on the switch's legs and\n"
        "received vs. sent by SIPp; cpu%: the switch or Kamailio, main%: the switch's main thread, sipp%: both\n"
        "SIPp, kern%: kernel threads (ksoftirqd: packets the kernel delivers outside any process), othr%: anything\n"
        "else (other users of the machine; not this script), mach%: the whole machine, of 100 per core -- all over\n"
        "the steady part of the step"
    )
    print(HEADER, flush=True)

    sw_best = ref_best = conc_best = None
    sw_passing: list[Step] = []
    interrupted = ""
    try:
        write_tone(tmp / TONE)
        # budget kept for the later phases: a few reference probes and its confirmation, two concurrency steps
        step_s = probe_s + args.hold_ms / 1000 + 5
        ref_reserve = min(3, len(ref_ladder)) * step_s + (confirm_s + 12 if confirm_s else 0) if kamailio else 0.0
        ramp_s = [n / args.ramp_cps for n in conc_ladder[:2]]
        conc_reserve = 0.0 if args.skip_conc else sum(2 * r + plateau + 6 for r in ramp_s)
        if not args.skip_cps:
            sw_best, sw_passing = cps_search(
                bench, "softswitch", sw_ladder, probe_s, confirm_s, reserve=ref_reserve + conc_reserve
            )
        if not args.skip_conc:
            # placed well below the switch's call-rate ceiling, so that the calls, not their set-up, are measured
            top = sw_best.rate if sw_best else (sw_passing[-1].rate if sw_passing else 0)
            ramp = min(args.ramp_cps, max(25, round(top * 0.75))) if top else args.ramp_cps
            conc_best = conc_search(bench, conc_ladder, ramp, plateau, reserve=ref_reserve)
        if kamailio:
            ref_best, _ = cps_search(bench, "kamailio", ref_ladder, probe_s, confirm_s)
    except KeyboardInterrupt as exc:
        interrupted = str(exc) or "interrupted"
    finally:
        Managed.stop_all()
        if args.keep or args.profile:
            print(f"working directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    cps, failed_pct, p99 = headline_figures(sw_best, bench.steps, "softswitch")
    ref_cps = ref_best.rate if ref_best else 0
    concurrent = conc_best.calls if conc_best else 0
    window = f"{confirm_s:g} s" if confirm_s else f"{probe_s:g} s (quick)"

    print()
    print(f"{'system':<40}{'cps':>6}{'failed %':>10}{'p99 ms':>8}{'concurrent':>12}")
    sw_label = "softswitch (B2BUA, RTP anchored)"
    conc_text = str(concurrent) if not args.skip_conc else "-"
    print(f"{sw_label:<40}{cps:>6}{failed_pct:>10.3f}{fmt(p99, '.0f'):>8}{conc_text:>12}")
    if kamailio:
        label = "kamailio (stateful proxy" + (", RTP end to end)" if args.ref_media else ", signalling only)")
        _, r_failed, r_p99 = headline_figures(ref_best, bench.steps, "kamailio")
        print(f"{label:<40}{ref_cps:>6}{r_failed:>10.3f}{fmt(r_p99, '.0f'):>8}{'-':>12}")
    print(f"(cps: the largest rate held for {window}; goal >= 500 cps and >= 600 concurrent anchored calls)")

    if sw_best is not None:
        c = sw_best.cpu
        rtp = sw_best.rtp
        print(
            f"at {sw_best.rate} cps the switch used {fmt(c.get('target'), '.0f')} % of a core (main thread "
            f"{fmt(c.get('main'), '.0f')} %, {fmt(10 * c.get('main', math.nan) / sw_best.rate, '.2f')} ms of CPU "
            f"per call; all threads {fmt(10 * c.get('target', math.nan) / sw_best.rate, '.2f')} ms), "
            f"SIPp {fmt(c.get('sipp'), '.0f')} %, the machine {fmt(c.get('machine'), '.0f')} % of {100 * cores} "
            f"(others {fmt(c.get('other'), '.0f')} %); RTP loss {fmt(rtp.get('loss_pct'), '.3f')} %, "
            f"jitter mean {fmt(rtp.get('jitter_ms'), '.2f')} ms"
        )
        print(f"  switch {threads_text(c)}{gc_text(sw_best.gc)}")
    fails = [s for s in bench.steps if not s.held and s.system == "softswitch"]
    for s in fails[:3]:
        c = s.cpu
        print(
            f"switch {s.kind} {s.rate if s.kind == 'cps' else s.calls} failed: {'; '.join(s.reasons())}; "
            f"switch {fmt(c.get('target'), '.0f')} % (main {fmt(c.get('main'), '.0f')} %), "
            f"machine {fmt(c.get('machine'), '.0f')} %; {threads_text(c)}{gc_text(s.gc)}"
        )
    if conc_best is not None:
        c, rtp = conc_best.cpu, conc_best.rtp
        print(
            f"at {conc_best.calls} concurrent calls the switch used {fmt(c.get('target'), '.0f')} % of a core "
            f"(main thread {fmt(c.get('main'), '.0f')} %), SIPp {fmt(c.get('sipp'), '.0f')} %; RTP loss "
            f"{fmt(rtp.get('loss_pct'), '.3f')} %, jitter mean {fmt(rtp.get('jitter_ms'), '.2f')} ms, "
            f"max {fmt(rtp.get('jitter_max_ms'), '.1f')} ms"
        )
        print(f"  switch {threads_text(c)}")
    if ref_best is not None:
        c = ref_best.cpu
        print(
            f"at {ref_best.rate} cps Kamailio used {fmt(c.get('target'), '.0f')} % of a core (all its processes; "
            f"{fmt(10 * c.get('target', math.nan) / ref_best.rate, '.2f')} ms per call), SIPp "
            f"{fmt(c.get('sipp'), '.0f')} %, the machine {fmt(c.get('machine'), '.0f')} % "
            f"(others {fmt(c.get('other'), '.0f')} %)"
        )
    for note in bench.skipped:
        print(f"skipped: {note}")
    if interrupted:
        print(f"run interrupted ({interrupted}): figures are from the steps that finished")
    print(f"{len(bench.steps)} steps in {time.monotonic() - started:.0f} s")
    print(f"priority: the switch and Kamailio at nice {NICE}, the SIPp peers at 0")
    print(f"machine speed: 10^7 Python additions in {speed_before:.2f} s before the steps, {vm_speed_s():.2f} s after")
    print(
        f"sip_load cps={cps} failed_pct={failed_pct:.3f} p99_invite_180_ms={p99:g} "
        f"concurrent={concurrent} ref_proxy_cps={ref_cps}"
    )
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
