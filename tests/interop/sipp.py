"""SIPp harness for interop tests: run a SIPp caller to completion, or keep a SIPp callee running meanwhile.

Import it in tests as `from interop.sipp import run_uac, uas` (tests/ is on pytest's pythonpath). The scenarios
live in tests/interop/scenarios/; tests/interop/README.md lists them, their pairs and SIPp 3.6.1's quirks. Every
SIPp run is bounded twice: by SIPp's own `-timeout` (with `-timeout_error`, so a stuck call fails) and by a
subprocess deadline past it. Each run gets a fresh temp dir as working directory, for its logs and tone file.

SIPp binds more than its SIP port: the media port (`-mp`) and media port + 2 (both fatal if taken) and a
control port (`-cp`, UDP). All of them are bound on 127.0.0.1; a caller that does not name them gets free
ports from the kernel.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "scenarios"
TONE_FILE = "tone.ulaw"  # the file uac_basic_rtp.xml streams, relative to SIPp's working directory
_GRACE_S = 10.0  # subprocess deadline past SIPp's own -timeout

# Log files SIPp writes into its working directory (a fresh temp dir per run).
_STATS, _ERRORS, _MESSAGES, _LOGS = "stats.csv", "errors.log", "messages.log", "logs.log"


@dataclass
class SippResult:
    """What one SIPp process did: exit code, call counts, its output and the logs it left."""

    returncode: int
    successful: int
    failed: int
    stdout: str
    stderr: str
    errors: str  # -trace_err: unexpected messages and why calls failed
    messages: str = ""  # -trace_msg: every SIP message sent and received
    logs: str = ""  # -trace_logs: the scenario's <log> actions
    failures: dict[str, int] = field(default_factory=dict)  # non-zero Failed*(C) counters of the stat file
    in_progress: int = 0  # calls not ended when SIPp exited (CurrentCall of the stat file)

    @property
    def timed_out(self) -> bool:
        """True when SIPp's global -timeout (or the harness deadline) ended the run: calls may be unfinished."""
        return "timed out after" in self.stderr or "[harness] sipp killed" in self.stderr

    @property
    def ok(self) -> bool:
        """True when SIPp exited 0 with at least one call, none failed and none left unfinished."""
        return self.returncode == 0 and self.successful > 0 and self.failed == 0 and self.in_progress == 0

    def summary(self) -> str:
        """A short text for assertion messages: counts, failure reasons, the end of the logs."""
        return (
            f"rc={self.returncode} successful={self.successful} failed={self.failed} failures={self.failures} "
            f"in_progress={self.in_progress} timed_out={self.timed_out}\n"
            f"--- stderr\n{self.stderr[-2000:]}\n--- errors\n{self.errors[-3000:]}\n"
            f"--- messages\n{self.messages[-4000:]}"
        )


def sipp_binary() -> str | None:
    """The sipp executable on PATH, or None (the tests assert it is there)."""
    return shutil.which("sipp")


def scenario_path(scenario: str) -> Path:
    """A scenario name ("uac_cancel" or "uac_cancel.xml") as a file of tests/interop/scenarios/, or a path as is."""
    path = Path(scenario)
    if path.is_absolute() or (path.suffix == ".xml" and path.exists()):
        return path.resolve()
    name = scenario if scenario.endswith(".xml") else f"{scenario}.xml"
    path = SCENARIOS / name
    if not path.is_file():
        raise FileNotFoundError(f"no SIPp scenario {path}")
    return path


def free_udp_port(pair: bool = False) -> int:
    """A UDP port free on 127.0.0.1 (with `pair`, an even one whose port + 2 is free too, as -mp needs)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        if port % 2 or port + 3 > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in (port, port + 1, port + 2, port + 3):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind((HOST, p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free UDP port")


def make_ulaw_tone(path: Path | str, *, seconds: float = 3.0, freq_hz: float = 1000.0, level: float = 0.25) -> Path:
    """Write raw 8 kHz mu-law (no header, what SIPp's rtp_stream plays) of a sine tone; made at run time."""
    import numpy as np

    from media.g711 import ulaw_encode

    t = np.arange(round(seconds * 8000)) / 8000.0
    pcm = np.round(np.sin(2 * np.pi * freq_hz * t) * level * 32767).astype(np.int16)
    path = Path(path)
    path.write_bytes(ulaw_encode(pcm))
    return path


def _command(
    scenario: str,
    *,
    port: int,
    media_port: int | None,
    control_port: int | None,
    timeout_s: float,
    target: str | None = None,
    service: str | None = None,
    extra: Sequence[str] = (),
    host: str = HOST,
) -> list[str]:
    binary = sipp_binary()
    if binary is None:
        raise RuntimeError("sipp is not installed")
    cmd = [binary, "-sf", str(scenario_path(scenario))]
    if target is not None:
        cmd.append(target)
    if service is not None:
        cmd += ["-s", service]
    cmd += ["-i", host, "-p", str(port), "-mi", host]
    cmd += ["-mp", str(media_port if media_port is not None else free_udp_port(pair=True))]
    cmd += ["-ci", host, "-cp", str(control_port if control_port is not None else free_udp_port())]
    cmd += ["-nostdin", "-timeout", f"{math.ceil(timeout_s * 1000)}ms", "-timeout_error"]
    cmd += ["-trace_stat", "-stf", _STATS, "-trace_err", "-error_file", _ERRORS]
    cmd += ["-trace_msg", "-message_file", _MESSAGES, "-trace_logs", "-log_file", _LOGS]
    return cmd + list(extra)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


_SCREEN = {
    "successful": re.compile(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)"),
    "failed": re.compile(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)"),
}


def _result(workdir: Path, returncode: int, stdout: str, stderr: str) -> SippResult:
    """Counts from the last row of the stat file (SIPp writes one at exit), else from the last screen printed."""
    successful = failed = in_progress = 0
    failures: dict[str, int] = {}
    try:
        with (workdir / _STATS).open(newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        rows = []
    if len(rows) >= 2:
        last = dict(zip(rows[0], rows[-1], strict=False))
        successful = int(last.get("SuccessfulCall(C)", "0") or 0)
        failed = int(last.get("FailedCall(C)", "0") or 0)
        in_progress = int(last.get("CurrentCall", "0") or 0)
        for key, value in last.items():
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)" and value not in ("", "0"):
                failures[key.removesuffix("(C)")] = int(value)
    else:
        found = {k: rx.findall(stdout) for k, rx in _SCREEN.items()}
        successful = int(found["successful"][-1]) if found["successful"] else 0
        failed = int(found["failed"][-1]) if found["failed"] else 0
    return SippResult(
        returncode=returncode,
        successful=successful,
        failed=failed,
        stdout=stdout,
        stderr=stderr,
        errors=_read(workdir / _ERRORS),
        messages=_read(workdir / _MESSAGES),
        logs=_read(workdir / _LOGS),
        failures=failures,
        in_progress=in_progress,
    )


def run_uac(
    scenario: str,
    target: str,
    *,
    port: int,
    calls: int = 1,
    rate: float = 10,
    timeout_s: float = 30,
    media_port: int | None = None,
    service: str = "1000",
    control_port: int | None = None,
    extra: Sequence[str] = (),
    host: str = HOST,
) -> SippResult:
    """Place `calls` calls of `scenario` to `target` ("host:port") and wait for SIPp to finish.

    `service` is the Request-URI user ([service]); `host` the address SIPp sends from (any of 127.0.0.0/8,
    to play several parties). SIPp runs in a temp dir holding the tone file rtp_stream
    plays and its logs, which are read into the result before the dir goes.
    """
    with tempfile.TemporaryDirectory(prefix="sipp-uac-") as tmp:
        workdir = Path(tmp)
        make_ulaw_tone(workdir / TONE_FILE)
        cmd = _command(
            scenario,
            port=port,
            media_port=media_port,
            control_port=control_port,
            timeout_s=timeout_s,
            target=target,
            service=service,
            extra=["-m", str(calls), "-r", f"{rate:g}", *extra],
            host=host,
        )
        try:
            done = subprocess.run(
                cmd, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s + _GRACE_S
            )
            return _result(workdir, done.returncode, done.stdout, done.stderr)
        except subprocess.TimeoutExpired as exc:  # run() has killed SIPp by now
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            return _result(workdir, -signal.SIGKILL, out, err + "\n[harness] sipp killed past its deadline")


def udp_bound(port: int, host: str = HOST) -> bool:
    """Whether a socket is bound to host:port or 0.0.0.0:port over UDP (read from /proc: binding to test
    would race SIPp for the port)."""
    want = {f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}", f"00000000:{port:04X}"}
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        return any(line.split()[1] in want for line in f.readlines()[1:])
    return False


class SippServer:
    """A SIPp UAS running in the background: its ports, and stop() for its counts."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        workdir: Path,
        port: int,
        media_port: int,
        control_port: int,
        host: str = HOST,
    ):
        self.proc = proc
        self.host = host
        self.workdir = workdir
        self.port = port
        self.media_port = media_port
        self.control_port = control_port
        self._result: SippResult | None = None

    @property
    def target(self) -> str:
        """The "host:port" to give a caller (or a softswitch route) that should reach this callee."""
        return f"{self.host}:{self.port}"

    def running(self) -> bool:
        """True while the SIPp process has not exited."""
        return self.proc.poll() is None

    def wait(self, timeout_s: float = 30) -> SippResult:
        """Wait for SIPp to exit by itself (after its -m calls), then stop() it; waiting is bounded."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        return self.stop()

    def stop(self, grace_s: float = 5) -> SippResult:
        """End SIPp and return its counts: SIGUSR1 (SIPp's soft exit: no new calls, calls in progress may end),
        then after `grace_s` SIGTERM (SIPp exits at once, still writing its stats), then kill.

        Calls still in progress at the SIGTERM are in neither count: see `in_progress`.
        """
        if self._result is not None:
            return self._result
        for sig, wait_s in ((signal.SIGUSR1, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait_s)
        self._result = _result(
            self.workdir, self.proc.returncode, _read(self.workdir / "stdout.txt"), _read(self.workdir / "stderr.txt")
        )
        return self._result


@contextlib.contextmanager
def uas(
    scenario: str,
    *,
    port: int,
    media_port: int | None = None,
    rtp_echo: bool = False,
    calls: int | None = None,
    timeout_s: float = 120,
    control_port: int | None = None,
    extra: Sequence[str] = (),
    host: str = HOST,
) -> Iterator[SippServer]:
    """Run a SIPp callee of `scenario` on `host`:`port` for the duration of the block.

    Yields once SIPp listens. `rtp_echo` sends the media received on `media_port` back to its source;
    `calls` makes SIPp exit by itself after that many calls (else it runs until stop() or `timeout_s`).
    At exit the process is stopped if still running (see `SippServer.stop`); its counts come from `server.stop()`
    or `server.wait()` called inside the block.
    """
    if media_port is None:
        media_port = free_udp_port(pair=True)
    if control_port is None:
        control_port = free_udp_port()
    args = list(extra)
    if rtp_echo:
        args.append("-rtp_echo")
    if calls is not None:
        args += ["-m", str(calls)]
    cmd = _command(
        scenario,
        port=port,
        media_port=media_port,
        control_port=control_port,
        timeout_s=timeout_s,
        extra=args,
        host=host,
    )
    with tempfile.TemporaryDirectory(prefix="sipp-uas-") as tmp:
        workdir = Path(tmp)
        make_ulaw_tone(workdir / TONE_FILE)
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        server = SippServer(proc, workdir, port, media_port, control_port, host)
        try:
            deadline = time.monotonic() + 10
            while not (udp_bound(port, host) and udp_bound(media_port, host)):
                if proc.poll() is not None:
                    raise RuntimeError(f"sipp UAS exited at start:\n{server.stop().summary()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sipp UAS not listening on {host}:{port} after 10 s")
                time.sleep(0.05)
            yield server
        finally:
            server.stop()
            if proc.poll() is None:  # stop() kills; this is the last resort should it have raised
                proc.kill()
                proc.wait(timeout=5)


_DIGEST_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_PROXY_AUTH_LOG = re.compile(r"^proxy-authorization (\S+) (\S+) ?(.*)$", re.MULTILINE)


def digest_params(header: str) -> dict[str, str]:
    """The parameters of a `Digest k=v, k="v"` credentials header value, unquoted, keys lower-cased."""
    rest = header.strip()
    if rest[:7].lower() == "digest ":
        rest = rest[7:]
    return {k.lower(): v[1:-1] if v.startswith('"') else v for k, v in _DIGEST_PARAM.findall(rest)}


def digest_problems(
    header: str, *, method: str, username: str, password: str, request_uri: str | None = None
) -> list[str]:
    """What is wrong with Digest credentials (RFC 2617/7616, MD5, qop auth or none); empty when they verify.

    Written here with hashlib, independent of the softswitch's own digest code, so it can judge it.
    """
    if not header.strip().lower().startswith("digest "):
        return [f"not Digest credentials: {header!r}"]
    p = digest_params(header)
    problems = [f"missing {k}" for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if problems:
        return problems
    if p["username"] != username:
        problems.append(f"username {p['username']!r} != {username!r}")
    if p.get("algorithm", "MD5").upper() != "MD5":
        problems.append(f"algorithm {p['algorithm']!r} is not MD5")
    if request_uri is not None and p["uri"] != request_uri:
        problems.append(f"uri {p['uri']!r} != Request-URI {request_uri!r}")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{p['username']}:{p['realm']}:{password}")
    ha2 = md5(f"{method}:{p['uri']}")
    qop = p.get("qop")
    if qop is None:
        want = md5(f"{ha1}:{p['nonce']}:{ha2}")
    elif qop == "auth" and "nc" in p and "cnonce" in p:
        want = md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{qop}:{ha2}")
    else:
        return [*problems, f"qop {qop!r} without nc/cnonce, or not 'auth'"]
    if p["response"].lower() != want:
        problems.append(f"response {p['response']!r} does not verify with the password (expected {want})")
    return problems


def proxy_auth_problems(result: SippResult, *, username: str, password: str, check_uri: bool = True) -> list[str]:
    """Check every Proxy-Authorization that uas_407.xml logged; empty when each verifies.

    SIPp 3.6.1's <verifyauth> only reads "Authorization:", so uas_407.xml checks the header's shape and logs
    it; the digest response is verified here. `check_uri` also requires uri= to be the Request-URI.
    """
    found = _PROXY_AUTH_LOG.findall(result.logs)
    if not found:
        return ["no Proxy-Authorization logged (uas_407.xml, run through interop.sipp with -trace_logs)"]
    problems: list[str] = []
    for method, request_uri, header in found:
        if not header:
            problems.append(f"{method} {request_uri}: no Proxy-Authorization")
            continue
        for problem in digest_problems(
            header, method=method, username=username, password=password, request_uri=request_uri if check_uri else None
        ):
            problems.append(f"{method} {request_uri}: {problem}")
    return problems


__all__ = [
    "HOST",
    "SCENARIOS",
    "TONE_FILE",
    "SippResult",
    "SippServer",
    "digest_params",
    "digest_problems",
    "free_udp_port",
    "make_ulaw_tone",
    "proxy_auth_problems",
    "run_uac",
    "scenario_path",
    "sipp_binary",
    "uas",
]
