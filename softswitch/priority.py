"""The scheduling priority of `softswitch serve` (`[process] nice`).

A busy switch on a box it shares (load generators, a database, a proxy) is otherwise preempted whenever
one of them wakes: its call set-up times stretch while its own CPU time does not change. Telephony
servers run at a raised priority on purpose (Asterisk's -p, FreeSWITCH's -hp). Below 0 needs root or
CAP_SYS_NICE: without it the switch says so and runs on.
"""

from __future__ import annotations

import logging
import os

from softswitch.logs import event

log = logging.getLogger(__name__)


def set_nice(nice: int) -> bool:
    """Give every thread of the process `nice`. On Linux a niceness is per thread: those that exist already
    (importing numpy starts OpenBLAS's) are set one by one, and those started afterwards from this one (the
    media engine's, the store checkpointer's, libuv's workers) inherit it. Whether it was applied (0 asks
    for nothing)."""
    if nice == 0:
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # no /proc: the calling thread only
    try:
        for tid in tids:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        event(log, "process.nice_refused", level=logging.WARNING, nice=nice, reason=exc.strerror or str(exc))
        return False
    event(log, "process.nice", nice=nice)
    return True
