"""Non-dominated fronts and hypervolume for quality-up / cost-down objectives.

Points are rows of (quality, cost): quality is maximised (SI-SDR in dB), cost minimised (per-hop latency in
ms, or MACs). The hypervolume is the area dominated by the front inside the box spanned by a reference
point (quality_ref, cost_ref): quality_ref is the noisy input's quality (doing nothing), cost_ref a cost no
useful student exceeds (the latency limit, or the hop duration for "real time per hop"). Points outside the
box add nothing. Area units: dB x ms (or dB x GMAC/s).
"""

from __future__ import annotations

import numpy as np


def front_mask(quality, cost) -> np.ndarray:
    """True where no other point is at least as good on both and strictly better on one."""
    q = np.asarray(quality, float)
    c = np.asarray(cost, float)
    n = len(q)
    mask = np.ones(n, bool)
    for i in range(n):
        dominated = (q >= q[i]) & (c <= c[i]) & ((q > q[i]) | (c < c[i]))
        mask[i] = not dominated.any()
    return mask


def hypervolume(quality, cost, quality_ref: float, cost_ref: float) -> float:
    """Area dominated by the points within [quality_ref, +inf) x [0, cost_ref]."""
    q = np.asarray(quality, float)
    c = np.asarray(cost, float)
    keep = (q > quality_ref) & (c < cost_ref)
    if not keep.any():
        return 0.0
    q, c = q[keep], c[keep]
    order = np.argsort(c)              # sweep by increasing cost; the best quality so far sets the height
    area, best_q = 0.0, quality_ref
    for k, i in enumerate(order):
        best_q = max(best_q, q[i])
        c_next = c[order[k + 1]] if k + 1 < len(order) else cost_ref
        area += (best_q - quality_ref) * (c_next - c[i])
    return float(area)


def hypervolume_history(quality, cost, quality_ref: float, cost_ref: float) -> list[float]:
    """Hypervolume after each point, in the order given (e.g. trial completion order)."""
    return [hypervolume(quality[: k + 1], cost[: k + 1], quality_ref, cost_ref) for k in range(len(quality))]


def fronts(df):
    """Adds on_front (SI-SDR vs latency) and on_front_macs (SI-SDR vs MACs) over complete feasible trials."""
    df = df.copy()
    df["on_front"] = False
    df["on_front_macs"] = False
    ok = (df["state"] == "COMPLETE") & (df["feasible"] == True)  # noqa: E712  (pandas mask)
    if ok.any():
        sub = df[ok]
        df.loc[ok, "on_front"] = front_mask(sub["val_si_sdr_db"].to_numpy(float), sub["latency_ms"].to_numpy(float))
        df.loc[ok, "on_front_macs"] = front_mask(sub["val_si_sdr_db"].to_numpy(float),
                                                 sub["gmacs_per_s"].to_numpy(float))
    return df
