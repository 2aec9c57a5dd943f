"""Call-quality estimate from RTP statistics: the ITU-T G.107 E-model, simplified as G.113 Appendix I
and common practice do for G.711 (no codec impairment, packet-loss robustness Bpl = 25.1 with PLC)."""

from __future__ import annotations


def r_factor(loss_pct: float, one_way_delay_ms: float, ie: float = 0.0, bpl: float = 25.1) -> float:
    """Transmission rating R (0-100) from random packet loss and mouth-to-ear delay."""
    d = max(one_way_delay_ms, 0.0)
    idd = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = min(max(loss_pct, 0.0), 100.0)
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    return max(0.0, min(100.0, 93.2 - idd - ie_eff))


def mos(r: float) -> float:
    """Mean opinion score (1.0-4.5) for a rating R (G.107 Annex B)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
