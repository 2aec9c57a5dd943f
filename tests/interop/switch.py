"""A real `softswitch serve` process for interop tests: config written to a temp dir, started, stopped.

The process logs at debug level in JSON so tests can read the `call.*` events in order, and its call
records are read straight from its SQLite file (a second connection; WAL lets readers in).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


class Softswitch:
    """`with Softswitch(tmp_path, sip_port=..., rtp=(lo, hi), body=...) as sw:` runs the switch."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        sip_port: int,
        api_port: int,
        rtp: tuple[int, int],
        body: str = "",
        sip_extra: str = "",
        transports: tuple[str, ...] = ("udp", "tcp"),
        t1_ms: int = 100,
        tls: tuple[int, str, str] | None = None,
    ):
        """`tls`: (port, certificate, key) of a TLS listener besides the others."""
        self.dir = tmp_path
        self.sip_port = sip_port
        self.db = tmp_path / "sw.db"
        self.log_path = tmp_path / "sw.log"
        listen = ", ".join(f'"{t}:127.0.0.1:{sip_port}"' for t in transports)
        if tls is not None:
            listen += f', "tls:127.0.0.1:{tls[0]}"'
            sip_extra += f'\ntls_cert = "{tls[1]}"\ntls_key = "{tls[2]}"\n'
        self.config = tmp_path / "sw.toml"
        self.config.write_text(
            f'[sip]\nlisten = [{listen}]\ndomain = "example.test"\nt1_ms = {t1_ms}\n{sip_extra}\n'
            f'[media]\nrtp_ports = "{rtp[0]}-{rtp[1]}"\nrecordings_dir = "{tmp_path / "rec"}"\n'
            f'[api]\nlisten = "127.0.0.1:{api_port}"\n'
            f'[store]\npath = "{self.db}"\n'
            f'[log]\nlevel = "debug"\nformat = "json"\n{body}\n'
        )
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Softswitch:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "softswitch", "serve", "-c", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"softswitch exited: {self.log_path.read_text()[-3000:]}")
            if "softswitch.started" in self.log_path.read_text():
                return self
            time.sleep(0.05)
        raise RuntimeError("softswitch did not start in time")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- what it did -------------------------------------------------------------------------------------
    def log_records(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_log(self, event: str, timeout: float = 10.0) -> dict:
        """The first log record of `event`, waiting for it to appear."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if record.get("event") == event:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no {event} in the log")

    def events(self, prefix: str = "call.") -> list[dict]:
        """The bus events the switch logged, in order (each with `event` and `call`)."""
        names = ("call.initiated", "call.ringing", "call.answered", "call.completed", "call.dtmf", "call.amd")
        return [r for r in self.log_records() if r.get("event", "").startswith(prefix) and r["event"] in names]

    def calls(self) -> list[dict]:
        """Call records, oldest first, each with its legs (media statistics decoded)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            calls = [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY created_at")]
            for call in calls:
                legs = db.execute("SELECT * FROM call_legs WHERE call_id = ? ORDER BY idx", (call["id"],))
                call["legs"] = [dict(leg) | {"media": json.loads(leg["media"])} for leg in legs]
        return calls

    def wait_calls(self, count: int, timeout: float = 10.0, ended: bool = True) -> list[dict]:
        """Wait until `count` call records exist (all ended, by default)."""
        deadline = time.monotonic() + timeout
        calls: list[dict] = []
        while time.monotonic() < deadline:
            calls = self.calls()
            if len(calls) >= count and (not ended or all(c["ended_at"] for c in calls)):
                return calls
            time.sleep(0.05)
        raise AssertionError(f"expected {count} ended calls, have {calls}")
