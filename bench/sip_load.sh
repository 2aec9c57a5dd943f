#!/usr/bin/env bash
# SIP load bench: SIPp against `softswitch serve` on loopback (media anchored), side by side with SIPp
# through a Kamailio stateful proxy. Usage: bench/sip_load.sh [--quick] [options of bench/sip_load.py]
# (bench/sip_load.sh --help lists them). The last line is the headline:
#   sip_load cps=N failed_pct=X p99_invite_180_ms=X concurrent=N ref_proxy_cps=N
# Needs SIPp (Debian: sip-tester) and, for the reference, kamailio. Bounded: --quick under a minute, the
# full run under 15 minutes (the helper keeps its own budget; `timeout` is the last resort).
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/bounded.sh" sip_load.py 960 150 "$@"
