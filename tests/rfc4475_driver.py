"""Run inside a private network namespace: start `softswitch serve`, send it every RFC 4475 message over
UDP, and print what came back for each file as JSON (one object: file -> list of status codes).

Responses go where RFC 3261 18.2.2 sends them (the source address as `received`, then the Via's port or
5060), so the driver sends from 127.0.0.1:5060 and also listens on every other Via port named.
"""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DATA = Path(__file__).parent / "sip" / "data" / "rfc4475"
SERVER_PORT, API_PORT = 5999, 8099


def main() -> int:
    var = Path(sys.argv[1])
    cfg = var / "sw.toml"
    # The torture messages reuse branch parameters (several are z9hG4bKkdjuw from the same sent-by), so a
    # server matching by RFC 3261 17.2.3 takes a later one for a retransmission of an earlier one while
    # that transaction lives (Timer J: 64*T1). A 5 ms T1 ends each transaction before the next message.
    cfg.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{SERVER_PORT}"]\nt1_ms = 5\nt2_ms = 40\nt4_ms = 20\n'
        f'[api]\nlisten = "127.0.0.1:{API_PORT}"\n[store]\npath = "{var / "sw.db"}"\n'
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "softswitch", "serve", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=(var / "serve.log").open("w"),
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{API_PORT}/health", timeout=0.5)
                break
            except OSError:
                time.sleep(0.05)
        files = sorted(DATA.glob("*.dat"))
        ports = {5060}
        for path in files:
            for port in re.findall(rb"^(?:Via|v)\s*:[^\r\n]*?:(\d+)", path.read_bytes(), re.M | re.I):
                ports.add(int(port))
        socks = {}
        for port in sorted(ports - {SERVER_PORT, API_PORT}):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            socks[port] = s
        results: dict[str, list[int]] = {}
        for path in [*files, None]:
            data = (
                path.read_bytes()
                if path
                else (
                    b"OPTIONS sip:user@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKafter\r\n"
                    b"From: <sip:t@x>;tag=1\r\nTo: <sip:u@x>\r\nCall-ID: after-all\r\nCSeq: 1 OPTIONS\r\n"
                    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                )
            )
            name = path.stem if path else "options-after-all"
            m = re.search(rb"^(?:Call-ID|i)\s*:\s*([^\r\n]+)", data, re.M | re.I)
            call_id = m.group(1).strip() if m else None
            socks[5060].sendto(data, ("127.0.0.1", SERVER_PORT))
            statuses = []
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                ready, _, _ = select.select(list(socks.values()), [], [], 0.05)
                for s in ready:
                    reply = s.recv(65535)
                    cm = re.search(rb"^Call-ID:\s*([^\r\n]+)", reply, re.M)
                    if (cm.group(1).strip() if cm else None) == call_id:
                        statuses.append(int(reply.split(b" ", 2)[1]))
            results[name] = statuses
        results["_server_alive"] = [int(server.poll() is None)]
        print(json.dumps(results))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
