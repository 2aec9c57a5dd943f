#!/usr/bin/env bash
# Runs a bench script with the project's Python under a hard time limit: `timeout` is the last resort, the
# script keeps its own budget. Usage: bench/bounded.sh SCRIPT.py LIMIT_S QUICK_LIMIT_S [script options]
# (QUICK_LIMIT_S applies when the options include --quick).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
    python="$(command -v python3)"
fi

script="$1" limit="$2" quick="$3"
shift 3
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then
        limit="$quick"
    fi
done

cd "$root"
exec timeout --signal=TERM --kill-after=60 "$limit" "$python" "$here/$script" "$@"
