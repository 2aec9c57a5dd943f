"""Kamailio as a carrier's stateful proxy in front of the softswitch, for interop tests.

The proxy record-routes every dialog and relays: requests the switch sends (from its SIP port) go to the
carrier side (`far_port`), every other new request goes to the switch. In-dialog requests follow the
Record-Route (loose routing), so BYE and re-INVITE cross the proxy in both directions, as they would at a
real carrier.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from interop.sipp import udp_bound

MODULES = ("tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "xlog")

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
{loads}
request_route {{
    xlog("L_INFO", "in $rm $ru from $si:$sp route=$hdr(Route)\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    if ($sp == {switch_port}) {{ $du = "sip:127.0.0.1:{far_port}"; }} else {{ $du = "sip:127.0.0.1:{switch_port}"; }}
    xlog("L_INFO", "relay $rm $ru from $si:$sp to $du\\n");
    t_relay();
}}
"""


def available() -> bool:
    return shutil.which("kamailio") is not None and module_path() is not None


def module_path() -> Path | None:
    for candidate in Path("/usr/lib").glob("*/kamailio/modules"):
        if (candidate / "tm.so").exists():
            return candidate
    candidate = Path("/usr/lib/kamailio/modules")
    return candidate if (candidate / "tm.so").exists() else None


class Kamailio:
    """`with Kamailio(tmp_path, port=..., switch_port=..., far_port=...):` runs the proxy in the foreground."""

    def __init__(self, tmp_path: Path, *, port: int, switch_port: int, far_port: int):
        self.port = port
        self.dir = tmp_path / "kamailio"
        self.dir.mkdir(exist_ok=True)
        self.cfg = self.dir / "kamailio.cfg"
        loads = "\n".join(f'loadmodule "{m}.so"' for m in MODULES)
        self.cfg.write_text(
            CONFIG.format(port=port, mpath=module_path(), loads=loads, switch_port=switch_port, far_port=far_port)
        )
        self.log_path = self.dir / "kamailio.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Kamailio:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            ["kamailio", "-f", str(self.cfg), "-DD", "-E", "-Y", str(self.dir), "-P", str(self.dir / "k.pid")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited: {self.log_path.read_text()[-2000:]}")
            if udp_bound(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError("kamailio did not start in time")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def relayed(self) -> list[str]:
        return [line for line in self.log_path.read_text().splitlines() if "relay " in line]
