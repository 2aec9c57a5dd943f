#!/usr/bin/env bash
# SIP load bench: SIPp against `softswitch serve` on loopback (media anchored), side by side with SIPp
# through a Kamailio stateful proxy. Usage: bench/sip_load.sh [--quick] [options of bench/sip_load.py]
# (bench/sip_load.sh --help lists them). The last line is the headline:
#   sip_load cps=N failed_pct=X p99_invite_180_ms=X concurrent=N ref_proxy_cps=N
# Needs SIPp (Debian: sip-tester) and, for the reference, kamailio. Bounded: --quick under a minute, the
# full run under 15 minutes (the helper keeps its own budget; `timeout` is the last resort).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
    python="$(command -v python3)"
fi

limit=960
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then
        limit=150
    fi
done

cd "$root"
exec timeout --signal=TERM --kill-after=60 "$limit" "$python" "$here/sip_load.py" "$@"
