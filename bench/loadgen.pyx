# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Python face of the RTP load generator in loadgen_core.h (built by bench/media_load.py).

The per-packet loop is plain C run with the GIL released: the generator must out-run the relay it
measures, and at 1,000 calls that is 100,000 packets/s each way.
"""

from libc.stdint cimport int64_t, uint64_t

import errno as _errno
import os


cdef extern from "loadgen_core.h" nogil:
    ctypedef struct lg_result_t:
        uint64_t sent, sent_window, send_errors
        uint64_t received, received_window, duplicates, reordered, seq_gaps, ts_errors, ssrc_changes
        uint64_t misrouted, malformed, foreign, late
        uint64_t lat_max_ns, lat_sum_ns, lat_count
        int64_t lag_max_ns
        uint64_t lag_over_1ms
        double window_wall_s, gen_cpu_s, gen_busy_s
        int64_t window_start_ns, window_end_ns

    ctypedef struct lg_t:
        int n_calls, n_socks
        int *ports
        lg_result_t r

    lg_t *lg_new(int n_calls, const char *host, int port_min, int port_max, int *err)
    void lg_free(lg_t *g)
    int lg_set_target(lg_t *g, int i, const char *host, int port, int do_connect)
    int lg_run(lg_t *g, int64_t t0, int warm, int meas, int64_t tick_ns, int64_t drain_ns, int64_t hard_stop_ns)
    int64_t lg_quantile_ns(lg_t *g, double q)
    int64_t lg_now_mono()


cdef class LoadGen:
    """The far ends of ``n_calls`` calls: two bound UDP sockets per call (leg A's and leg B's far end)."""

    cdef lg_t *g
    cdef bytes host

    def __cinit__(self, int n_calls, str host="127.0.0.1", int port_min=10000, int port_max=19999):
        cdef int err = 0
        self.host = host.encode()
        self.g = lg_new(n_calls, self.host, port_min, port_max, &err)
        if self.g == NULL:
            raise OSError(err, f"load generator: binding {2 * n_calls} sockets: {os.strerror(err)}")

    def __dealloc__(self):
        if self.g != NULL:
            lg_free(self.g)
            self.g = NULL

    def close(self) -> None:
        if self.g != NULL:
            lg_free(self.g)
            self.g = NULL

    def local_ports(self) -> list:
        """[(port of leg A's far end, port of leg B's far end)] per call."""
        self._check()
        return [(self.g.ports[2 * c], self.g.ports[2 * c + 1]) for c in range(self.g.n_calls)]

    def set_targets(self, list relay_ports, bint connect=True) -> None:
        """[(relay port for leg A, relay port for leg B)] per call: where each far end sends."""
        self._check()
        if len(relay_ports) != self.g.n_calls:
            raise ValueError(f"{len(relay_ports)} targets for {self.g.n_calls} calls")
        cdef int c, rc
        for c, (pa, pb) in enumerate(relay_ports):
            for i, port in ((2 * c, pa), (2 * c + 1, pb)):
                rc = lg_set_target(self.g, i, self.host, port, connect)
                if rc < 0:
                    raise OSError(-rc, f"load generator: target port {port}: {os.strerror(-rc)}")

    def run(self, int64_t t0_ns, int warm_cycles, int meas_cycles, double tick_ms=0.5, double drain_s=0.3,
            double limit_s=0.0) -> dict:
        """Send from t0_ns (time.monotonic_ns()) for warm + meas cycles of 20 ms, then drain.

        The loop turns every tick_ms: sends what is due, reads what arrived. Releases the GIL for the whole
        run; returns the window's figures as a dict.
        """
        self._check()
        cdef int64_t drain_ns = <int64_t>(drain_s * 1e9)
        cdef int64_t tick_ns = <int64_t>(tick_ms * 1e6)
        cdef double total_s = (warm_cycles + meas_cycles) * 0.02 + drain_s
        cdef int64_t hard = t0_ns + <int64_t>((limit_s if limit_s > 0 else total_s + 10.0) * 1e9)
        cdef int rc
        with nogil:
            rc = lg_run(self.g, t0_ns, warm_cycles, meas_cycles, tick_ns, drain_ns, hard)
        if rc == -_errno.ETIMEDOUT:
            raise TimeoutError("load generator: run overran its time limit")
        if rc < 0:
            raise OSError(-rc, f"load generator: {os.strerror(-rc)}")
        cdef lg_result_t r = self.g.r
        lost = r.sent_window - r.received_window
        return {
            "calls": self.g.n_calls,
            "sent": r.sent,
            "sent_window": r.sent_window,
            "received": r.received,
            "received_window": r.received_window,
            "lost_window": lost,
            "loss_pct": 100.0 * lost / r.sent_window if r.sent_window else 100.0,
            "send_errors": r.send_errors,
            "duplicates": r.duplicates,
            "reordered": r.reordered,
            "seq_gaps": r.seq_gaps,
            "ts_errors": r.ts_errors,
            "ssrc_changes": r.ssrc_changes,
            "misrouted": r.misrouted,
            "malformed": r.malformed,
            "foreign": r.foreign,
            "late": r.late,
            "p50_ms": lg_quantile_ns(self.g, 0.50) / 1e6,
            "p99_ms": lg_quantile_ns(self.g, 0.99) / 1e6,
            "max_ms": r.lat_max_ns / 1e6,
            "mean_ms": (r.lat_sum_ns / r.lat_count / 1e6) if r.lat_count else 0.0,
            "send_lag_max_ms": r.lag_max_ns / 1e6,
            "sends_late_1ms": r.lag_over_1ms,
            "window_s": r.window_wall_s,
            "gen_cpu_s": r.gen_cpu_s,
            "gen_cpu_pct": 100.0 * r.gen_cpu_s / r.window_wall_s if r.window_wall_s > 0 else 0.0,
            "gen_busy_pct": 100.0 * r.gen_busy_s / r.window_wall_s if r.window_wall_s > 0 else 0.0,
        }

    cdef int _check(self) except -1:
        if self.g == NULL:
            raise ValueError("load generator is closed")
        return 0


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns, the generator's clock (same as time.monotonic_ns() on Linux)."""
    return lg_now_mono()
