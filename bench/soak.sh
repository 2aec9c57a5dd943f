#!/usr/bin/env bash
# Soak bench: calls at 80 % of the measured call-rate capacity for an hour (--quick: 5 minutes), through
# `softswitch serve` on loopback with RTP anchored; reports failed calls, RSS and open file descriptors at
# the start and the end. Usage: bench/soak.sh [--quick] [--minutes N] [--capacity CPS] (see bench/soak.py).
# Last line: soak minutes=N calls=N failed=N rss_start_mb=X rss_end_mb=X fds_start=N fds_end=N
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
    python="$(command -v python3)"
fi

limit=4500  # 75 minutes: the hour, the set-up and the wind-down; `timeout` is the last resort
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then
        limit=900
    fi
done

cd "$root"
exec timeout --signal=TERM --kill-after=60 "$limit" "$python" "$here/soak.py" "$@"
