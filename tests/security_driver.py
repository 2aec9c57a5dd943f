"""Run inside a private network namespace (tests/test_security_live.py): a real `softswitch serve`, the tools
attackers use (Debian's sipvicious) and SIPp playing carrier, user and attacker from their own loopback
addresses. Prints what happened as one JSON object on its last line; `python security_driver.py SCENARIO VAR`.

Addresses (all of 127.0.0.0/8 is loopback): the softswitch listens on 127.0.0.10. sipvicious cannot be told
which address to send from (its -b is ignored), so a route gives every unbound socket sending to the
softswitch the source 127.0.0.2: the attacker. SIPp binds its own: users on 127.0.0.3, the carrier trunk
callee on 127.0.0.4, the carrier sending calls in on 127.0.0.6, a spoofing attacker on 127.0.0.5.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from interop.sipp import run_uac, uas  # noqa: E402

SW, PORT, API, METRICS = "127.0.0.10", 5060, 8080, 9090
ATTACKER, USER, CALLEE, SPOOFER, CARRIER = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"
CALLEE_PORT = 5080
SMALL_PORT = 5084  # a second trunk's callee, on the same address
SOFTSWITCH = [sys.executable, "-m", "softswitch"]


def network() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(
        ["ip", "route", "add", "local", f"{SW}/32", "dev", "lo", "src", ATTACKER, "table", "local"], check=True
    )


def config(var: Path, body: str) -> Path:
    path = var / "sw.toml"
    path.write_text(
        f'[sip]\nlisten = ["udp:{SW}:{PORT}"]\ndomain = "sec.test"\nauth_algorithms = ["MD5"]\n{body}\n'
        f'[api]\nlisten = "{SW}:{API}"\nmetrics_listen = "{SW}:{METRICS}"\n'
        f'[store]\npath = "{var / "sw.db"}"\n[media]\nrtp_ports = "30000-30999"\nrecordings_dir = "{var / "rec"}"\n'
        '[log]\nformat = "json"\n'
    )
    return path


@contextlib.contextmanager
def serve(cfg: Path, var: Path) -> Iterator[subprocess.Popen]:
    log = (var / "serve.log").open("w")
    proc = subprocess.Popen(
        [*SOFTSWITCH, "serve", "-c", str(cfg)], stdout=subprocess.DEVNULL, stderr=log, cwd=HERE.parent
    )
    try:
        for _ in range(300):
            assert proc.poll() is None, (var / "serve.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://{SW}:{API}/health", timeout=0.5)
                break
            except OSError:
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def metrics() -> dict[str, float]:
    """The /metrics samples of interest: name{labels} -> value."""
    text = urllib.request.urlopen(f"http://{SW}:{METRICS}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("softswitch_security", "softswitch_sip_requests_total", "softswitch_sip_transactions")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def security_log(var: Path) -> list[dict]:
    """The `security.*` events the server logged (JSON lines)."""
    events = []
    for line in (var / "serve.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if str(item.get("event", "")).startswith("security."):
                events.append(item)
    return events


def rss_kb(proc: subprocess.Popen) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sipvicious(tool: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def table_rows(output: str) -> list[list[str]]:
    """The rows of the result table sipvicious prints (`| a | b |`), header excluded."""
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in output.splitlines() if line.startswith("| ")
    ]
    return [row for row in rows if row[0] not in ("Extension", "Username", "SIP Device")]


# -- a bare SIP client for the answers' fine print ----------------------------------------------------------
class Probe:
    """Requests from `host` over UDP, and the answers' shape: what an enumerator compares."""

    def __init__(self, host: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(2.0)
        self.host, self.port = self.sock.getsockname()
        self.n = 0

    def request(self, method: str, user: str, headers: str = "", cseq: int = 1, call_id: str | None = None):
        """Send one request; its final answer (matched by Call-ID and CSeq), the time it took, the
        request-URI and Call-ID. An INVITE's final answer is ACKed (no retransmissions left behind)."""
        self.n += 1
        call_id = call_id or f"probe-{os.getpid()}-{self.n}"
        uri = f"sip:{SW}:{PORT}" if method == "REGISTER" else f"sip:{user}@{SW}:{PORT}"
        via = f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{call_id}x{cseq}\r\n"
        common = f"From: <sip:{user}@sec.test>;tag=t{call_id}\r\nCall-ID: {call_id}\r\n"
        event = "Event: presence\r\n" if method == "SUBSCRIBE" else ""
        msg = (
            f"{method} {uri} SIP/2.0\r\n{via}{common}To: <sip:{user}@sec.test>\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{user}@{self.host}:{self.port}>\r\nMax-Forwards: 70\r\n{event}{headers}"
            "Content-Length: 0\r\n\r\n"
        )
        start = time.perf_counter()
        self.sock.sendto(msg.encode(), (SW, PORT))
        while True:
            data = self.sock.recv(65535).decode()
            if f"Call-ID: {call_id}\r\n" not in data or f"CSeq: {cseq} {method}" not in data:
                continue  # a retransmission of an earlier answer
            if not data.startswith("SIP/2.0 1"):
                break
        took = time.perf_counter() - start
        if method == "INVITE":
            to = re.search(r"^To: (.*)$", data, re.M).group(1).strip()
            ack = f"ACK {uri} SIP/2.0\r\n{via}{common}To: {to}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\n"
            self.sock.sendto((ack + "Content-Length: 0\r\n\r\n").encode(), (SW, PORT))
        return data, took, uri, call_id

    def ask(self, method: str, user: str, password: str | None = None) -> tuple[dict, float]:
        """The final answer to `method` for `user` (after the challenge, with `password`'s digest)."""
        data, took, uri, call_id = self.request(method, user)
        if password is not None and data.split()[1] in ("401", "407"):
            header = "Authorization" if data.split()[1] == "401" else "Proxy-Authorization"
            challenge = re.search(r"^(?:WWW|Proxy)-Authenticate: (.*)$", data, re.M).group(1)
            realm = re.search(r'realm="([^"]*)"', challenge).group(1)
            nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)
            creds = _digest(method, uri, user, password, realm, nonce)
            data, took, _, _ = self.request(method, user, f"{header}: {creds}\r\n", cseq=2, call_id=call_id)
        return shape(data), took


def _digest(method: str, uri: str, user: str, password: str, realm: str, nonce: str) -> str:
    import hashlib

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    cnonce, nc = "0a4f113b", "00000001"
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", '
        f'algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


def shape(data: str) -> dict:
    """What of an answer an enumerator could compare: status line, header names in order, challenge
    parameters other than the nonce."""
    lines = data.split("\r\n")
    names = [line.split(":", 1)[0] for line in lines[1:] if ":" in line]
    challenges = [re.sub(r'nonce="[^"]*"', 'nonce="-"', line) for line in lines if "Authenticate:" in line]
    return {"status": lines[0], "headers": names, "challenges": challenges}


# -- scenarios ------------------------------------------------------------------------------------------------
USERS = "".join(f'[[users]]\nname = "{n}"\npassword = "pw-{n}-x9"\n' for n in (100, 103, 107))
ROUTES = '[[routes]]\nmatch = "^1[0-9][0-9]$"\nto = "user:100"\n'


def enumeration(var: Path) -> dict:
    """svwar over 100-110 with REGISTER, INVITE and OPTIONS (scanner filter off, limits out of the way), and
    the fine print of the answers for a known and an unknown user, with timing."""
    body = "drop_scanners = false\n[security]\nrate_per_s = 100000\nrate_burst = 100000\nfail_limit = 100000\n"
    out: dict = {"svwar": {}, "shapes": {}, "timing_ms": {}}
    with serve(config(var, body + USERS + ROUTES), var):
        for i, method in enumerate(("REGISTER", "INVITE", "OPTIONS")):
            text = sipvicious("svwar", "--force", "-m", method, "-e100-110", "-P", str(5071 + i), "-p", str(PORT), SW)
            out["svwar"][method] = {"found": [row[0] for row in table_rows(text)], "output": text[-1500:]}
        out["svmap_with_filter_off"] = table_rows(sipvicious("svmap", "-p", str(PORT), "-P", "5074", SW))
        probe = Probe("127.0.0.7")
        for method in ("REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE"):
            password = "wrong-guess" if method in ("REGISTER", "INVITE") else None
            known, unknown, t_known, t_unknown = [], [], [], []
            for _ in range(40):
                a, ta = probe.ask(method, "103", password)
                b, tb = probe.ask(method, "999", password)
                known.append(a)
                unknown.append(b)
                t_known.append(ta * 1000)
                t_unknown.append(tb * 1000)
            out["shapes"][method] = {"known": known[0], "unknown": unknown[0], "all_same": known == unknown}
            out["timing_ms"][method] = {"known": statistics.median(t_known), "unknown": statistics.median(t_unknown)}
    return out


def scanners(var: Path) -> dict:
    """The defaults: svwar's and svmap's requests (User-Agent friendly-scanner) are dropped: they hear nothing,
    and svmap finds no SIP device here."""
    with serve(config(var, USERS + ROUTES), var):
        text = sipvicious("svwar", "-m", "REGISTER", "-e100-110", "-P", "5071", "-p", str(PORT), SW)
        found = sipvicious("svmap", "-p", str(PORT), "-P", "5072", SW)
        return {
            "output": text[-1500:],
            "found": [r[0] for r in table_rows(text)],
            "svmap_output": found[-1500:],
            "svmap_found": table_rows(found),
            "metrics": metrics(),
        }


def bruteforce(var: Path) -> dict:
    """svcrack against user 100 from the attacker, the real password 31st in its wordlist; a control run first
    (user 107, password 3rd: found, so the tool does work here); a phone elsewhere keeps registering; the CLI
    lists and lifts the ban."""
    body = "drop_scanners = false\n"
    cfg = config(var, body + USERS + ROUTES)
    words = var / "words.txt"
    out: dict = {}
    with serve(cfg, var) as proc:
        words.write_text("aaa\nbbb\npw-107-x9\n")
        out["control"] = table_rows(sipvicious("svcrack", "-u107", "-d", str(words), "-p", str(PORT), SW))
        out["after_control"] = metrics()
        words.write_text("".join(f"guess{i:02d}\n" for i in range(30)) + "pw-100-x9\n")
        text = sipvicious("svcrack", "-u100", "-d", str(words), "-p", str(PORT), SW, timeout=180)
        out["crack"] = {"found": table_rows(text), "output": text[-1500:]}
        out["metrics"] = metrics()
        listed = subprocess.run(
            [*SOFTSWITCH, "bans", "list", "-c", str(cfg)], capture_output=True, text=True, cwd=HERE.parent
        )
        out["bans_list"] = listed.stdout
        # the banned address hears nothing now; a phone on another address registers as usual
        out["banned_answer"] = _answer_or_none(ATTACKER_PROBE(), "REGISTER", "100")
        out["other_phone"] = run_uac(
            "uac_register",
            f"{SW}:{PORT}",
            port=5090,
            service="103",
            host=USER,
            extra=["-au", "103", "-ap", "pw-103-x9"],
        ).successful
        lifted = cli("bans", "lift", ATTACKER, "-c", str(cfg))
        out["lift"] = [lifted.returncode, lifted.stdout.strip(), lifted.stderr.strip()]
        out["lift_again"] = cli("bans", "lift", ATTACKER, "-c", str(cfg)).returncode
        deadline, answer = time.monotonic() + 6, None
        while answer is None and time.monotonic() < deadline:
            answer = _answer_or_none(ATTACKER_PROBE(), "REGISTER", "100")
        out["answer_after_lift"] = answer
        out["events"] = [e["event"] for e in security_log(var)]
        out["rss_kb"] = rss_kb(proc)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SOFTSWITCH, *args], capture_output=True, text=True, cwd=HERE.parent, timeout=30)


def ATTACKER_PROBE() -> Probe:
    return Probe(ATTACKER)


def _answer_or_none(probe: Probe, method: str, user: str) -> str | None:
    try:
        return probe.request(method, user)[0].split("\r\n")[0]
    except TimeoutError:
        return None


AUTH_100 = ["-au", "100", "-ap", "pw-100-x9"]


def flood(var: Path) -> dict:
    """A SIPp flood of junk INVITEs from the attacker at SIPp's highest rate while a user on another address
    places 150 calls to the carrier; then 100,000 spoofed-looking sources, one SUBSCRIBE each (answered 405
    in a transaction; an OPTIONS would take none)."""
    body = (
        "max_transactions = 8000\n"
        "[security]\nrate_per_s = 100\nrate_burst = 200\nmax_sources = 4096\n"
        f'[[trunks]]\nname = "carrier"\naddress = "{CALLEE}:{CALLEE_PORT}"\n'
        f'inbound_from = ["{CALLEE}/32"]\nping_interval_s = 0\n'
        '[[routes]]\nmatch = "^1000$"\nto = "trunk:carrier"\n'
    )
    out: dict = {}
    with serve(config(var, body + USERS), var) as proc, uas("uas_answer", port=CALLEE_PORT, host=CALLEE) as callee:
        rss_before = rss_kb(proc)
        flood_start = time.monotonic()
        attacker = subprocess.Popen(
            [
                "sipp", "-sf", str(HERE / "interop" / "scenarios" / "uac_junk_invite.xml"), f"{SW}:{PORT}",
                "-s", "1000", "-i", ATTACKER, "-p", "5070", "-mi", ATTACKER, "-ci", ATTACKER,
                "-r", "100000", "-rp", "1000", "-m", "2000000", "-timeout", "20s", "-nostdin", "-trace_stat", "-stf",
                str(var / "flood.csv"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=var,
        )  # fmt: skip
        time.sleep(1.0)
        legit = run_uac(
            "uac_auth_any",
            f"{SW}:{PORT}",
            port=5090,
            service="1000",
            host=USER,
            calls=150,
            rate=10,
            timeout_s=60,
            extra=[*AUTH_100, "-auth_uri", f"1000@{SW}:{PORT}", "-key", "extra", "X-Test: flood", "-l", "40"],
        )
        attacker.wait(timeout=60)
        out["flood_s"] = time.monotonic() - flood_start
        out["legit_answered"] = legit.logs.count("final 200 OK")
        out["legit_finals"] = sorted(set(re.findall(r"final (\d+ [^\n]*)", legit.logs)))
        out["legit_summary"] = legit.summary()[-1500:]
        out["flood_sent"] = _sipp_sent(var / "flood.csv")
        out["callee_calls"] = callee.stop().successful
        out["metrics_after_flood"] = metrics()
        out["switch_socket_drops"] = udp_drops(PORT)
        # spoofed-looking sources: one request each from 100,000 addresses
        for i in range(100_000):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((f"127.{1 + (i >> 16)}.{i >> 8 & 255}.{i & 255}", 0))
                s.sendto(f"SUBSCRIBE sip:{SW} SIP/2.0\r\nVia: SIP/2.0/UDP 127.1.0.1:9;branch=z9hG4bKs{i}\r\n"
                         f"From: <sip:s@x>;tag={i}\r\nTo: <sip:s@x>\r\nCall-ID: s{i}\r\nCSeq: 1 SUBSCRIBE\r\n"
                         "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode(), (SW, PORT))  # fmt: skip
            if i % 200 == 0:
                time.sleep(0.02)  # about 10,000 a second: what the kernel's socket buffer holds for the server
        time.sleep(1.0)
        out["metrics_after_spoof"] = metrics()
        out["rss_kb"] = [rss_before, rss_kb(proc)]
    return out


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for full receive buffers on UDP sockets bound to `port` (/proc/net/udp)."""
    with open("/proc/net/udp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(int(r[-1]) for r in rows if int(r[1].rsplit(":", 1)[1], 16) == port)


def _sipp_sent(stat_file: Path) -> tuple[int, float]:
    """Calls SIPp created (one INVITE each for the flood) and in how many seconds, from its statistics."""
    import csv

    with contextlib.suppress(OSError, IndexError, KeyError, ValueError):
        last = list(csv.DictReader(stat_file.open(), delimiter=";"))[-1]
        h, m, s = last["ElapsedTime(C)"].split(":")
        return int(last["TotalCallCreated"]), int(h) * 3600 + int(m) * 60 + float(s)
    return -1, 0.0


def fraud(var: Path) -> dict:
    """Toll fraud: a stranger with forged identity headers, the carrier's own calls hairpinned out, users past
    their destinations, max_calls and calls_per_minute. The carrier trunk's callee counts what reached it."""
    body = (
        '[security]\ndeny_destinations = ["^00", "^\\\\+?88[123]"]\n'
        '[[users]]\nname = "100"\npassword = "pw-100-x9"\nmax_calls = 1\ncalls_per_minute = 3\n'
        '[[users]]\nname = "101"\npassword = "pw-101-x9"\ndestinations = ["^1[0-9]{3}$"]\n'
        '[[users]]\nname = "102"\npassword = "pw-102-x9"\n'
        f'[[trunks]]\nname = "carrier"\naddress = "{CALLEE}:{CALLEE_PORT}"\n'
        f'inbound_from = ["{CALLEE}/32", "{CARRIER}/32"]\nping_interval_s = 0\n'
        f'[[trunks]]\nname = "small"\naddress = "{CALLEE}:{SMALL_PORT}"\nping_interval_s = 0\n'
        'max_calls = 1\ndestinations = ["^7[0-9]{3}$"]\n'
        '[[routes]]\nmatch = "^7[0-9]+$"\nto = "trunk:small"\n'
        '[[routes]]\nmatch = "^(\\\\+|[0-689])[0-9]*$"\nto = "trunk:carrier"\n'
    )
    out: dict = {}
    port = iter(range(5100, 5200, 2))

    def call(user: str | None, password: str, number: str, *, host: str = USER, calls: int = 1, hold_ms: int = 0,
             headers: str = "X-Test: fraud") -> list[str]:  # fmt: skip
        extra = ["-key", "extra", headers, "-d", str(hold_ms), "-l", str(calls)]
        if user is not None:
            extra += ["-au", user, "-ap", password, "-auth_uri", f"{number}@{SW}:{PORT}"]
        done = run_uac("uac_auth_any", f"{SW}:{PORT}", port=next(port), service=number, host=host, calls=calls,
                       rate=20, timeout_s=30, extra=extra)  # fmt: skip
        return sorted(re.findall(r"final (\d+ [^\n]*)", done.logs)) or [done.summary()[-800:]]

    with serve(config(var, body), var):
        with uas("uas_answer", port=CALLEE_PORT, host=CALLEE) as callee:
            forged = "P-Asserted-Identity: <sip:100@sec.test>\r\nRoute: <sip:127.0.0.4:5080;lr>"
            out["stranger_forged"] = call("100", "not-the-password", "0044207946", host=SPOOFER, headers=forged)
            out["stranger_no_credentials"] = call(None, "", "0044207946", host=SPOOFER, headers=forged)
            out["carrier_hairpin"] = call(None, "", "15551234567", host=CARRIER)
            out["deny_list"] = call("102", "pw-102-x9", "0044207946")
            out["premium"] = call("102", "pw-102-x9", "+8821234567")
            out["outside_destinations"] = call("101", "pw-101-x9", "15551234567")
            out["inside_destinations"] = call("101", "pw-101-x9", "1234")
            out["max_calls"] = call("100", "pw-100-x9", "15551230001", calls=2, hold_ms=1500)
            out["calls_per_minute"] = call("100", "pw-100-x9", "15551230002", calls=3)
            # the small trunk's own limits: one call at a time, four-digit numbers only
            with uas("uas_answer", port=SMALL_PORT, host=CALLEE) as small:
                out["trunk_max_calls"] = call("102", "pw-102-x9", "7001", calls=2, hold_ms=1500)
                out["trunk_destinations"] = call("102", "pw-102-x9", "70012")
                out["small_calls"] = small.stop().successful
            out["callee_calls"] = callee.stop().successful
        # the carrier's party, answered on a user's call, REFERs it to an international number: transit
        refer = ["-key", "target", "0044207946"]
        with uas("uas_refer_refused", port=CALLEE_PORT, host=CALLEE, calls=1, extra=refer) as referer:
            out["refer_call"] = call("102", "pw-102-x9", "15551239999", hold_ms=2500)
            done = referer.wait(15)
        out["refer_callee"] = [done.successful, re.findall(r"NOTIFY (SIP/2.0 [^\n]*)", done.logs)]
        out["metrics"] = metrics()
        out["events"] = [e for e in security_log(var) if e["event"] == "security.call_refused"]
    return out


def main() -> int:
    scenario, var = sys.argv[1], Path(sys.argv[2])
    network()
    result = {
        "enumeration": enumeration,
        "scanners": scanners,
        "bruteforce": bruteforce,
        "flood": flood,
        "fraud": fraud,
    }[scenario](var)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
