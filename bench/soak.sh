#!/usr/bin/env bash
# Soak bench: calls at 80 % of the measured call-rate capacity for an hour (--quick: 5 minutes), through
# `softswitch serve` on loopback with RTP anchored; reports failed calls, RSS and open file descriptors at
# the start and the end. Usage: bench/soak.sh [--quick] [--minutes N] [--capacity CPS] (see bench/soak.py).
# Last line: soak minutes=N calls=N failed=N rss_start_mb=X rss_end_mb=X fds_start=N fds_end=N
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/bounded.sh" soak.py 4500 900 "$@"  # 75 minutes: the hour, the set-up and the wind-down
