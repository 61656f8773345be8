"""Metrics speed: PESQ-WB + STOI + eSTOI + SI-SDR for 200 mono 4-s clips on all cores, and a check that the
values equal direct calls of `pesq` / `pystoi` (PESQ exactly; STOI/eSTOI to 1e-12, pystoi's own
run-to-run jitter). Goal (issue: Foundation): <= 40 s on the 2-core machine.
Also times DNSMOS per clip (optional metric). Writes results/metrics_speed.json.
Usage: python benchmarks/metrics_speed.py [--clips 200] [--repeats 3]
"""

import argparse
import os
import tempfile
import time

import numpy as np
from pesq import pesq
from pystoi import stoi

from hwkd.data.layouts import scan
from hwkd.data.synth import CorpusSpec, build_corpus
from hwkd.metrics import score_pairs
from hwkd.metrics.quality import load_channel_and_reference
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import median, save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        build_corpus(d, CorpusSpec(seed=7, sizes={"mono": (0, 0, a.clips), "foa": (0, 0, 0)}), progress=False)
        pairs = scan(d).pairs
        jobs = [((p.noisy, 0), p.clean, p.id) for p in pairs]
        runs, rows = [], None
        for r in range(a.repeats):
            with LoadMeter() as m:
                rows = score_pairs(jobs, load_channel_and_reference, jobs=a.jobs)
            runs.append(m.as_dict())
            print("run", r, m.as_dict())
        # identity against direct calls
        worst = {"pesq_wb": 0.0, "stoi": 0.0, "estoi": 0.0}
        for (est_spec, ref, _), row in zip(jobs, rows):
            est, ref_x, sr = load_channel_and_reference(est_spec, ref)
            est, ref_x = est.astype(np.float64), ref_x.astype(np.float64)
            worst["pesq_wb"] = max(worst["pesq_wb"], abs(row["pesq_wb"] - pesq(sr, ref_x, est, "wb")))
            worst["stoi"] = max(worst["stoi"], abs(row["stoi"] - stoi(ref_x, est, sr, extended=False)))
            worst["estoi"] = max(worst["estoi"], abs(row["estoi"] - stoi(ref_x, est, sr, extended=True)))
        # DNSMOS cost per clip (one process, one thread per session)
        from hwkd.metrics.quality import score_clip
        est, ref_x, _ = load_channel_and_reference(jobs[0][0], jobs[0][1])
        score_clip(est, ref_x, dnsmos=True)
        t = []
        for j in jobs[1:4]:
            est, ref_x, _ = load_channel_and_reference(j[0], j[1])
            t0 = time.perf_counter()
            score_clip(est, ref_x, dnsmos=True)
            t.append(time.perf_counter() - t0)
    wall = median([x["wall_s"] for x in runs])
    statuses = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    save("metrics_speed", {
        "machine": fingerprint(), "jobs": a.jobs, "clips": a.clips, "clip_s": 4.0,
        "metrics": ["pesq_wb", "stoi", "estoi", "si_sdr_db"], "median_wall_s": wall,
        "goal_s": 40, "meets_goal": wall <= 40, "repeats": runs, "statuses": statuses,
        "max_abs_diff_vs_direct_calls": worst,
        "dnsmos_s_per_clip_one_core_incl_base_metrics": round(median(t), 3)})


if __name__ == "__main__":
    main()
