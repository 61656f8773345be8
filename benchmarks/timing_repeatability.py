"""How well this host repeats a latency figure, and which figure repeats best: the question behind the latency
predictor's calibration protocol (hwkd.hw.predict: PASSES, RUN_QUANTILE).

1. Time series: one model (cpu-student-causal's step graph, ONNX Runtime, 1 thread) measured in short runs
   back to back for `--series-s` seconds (a run: the calibration's PASS_PROTOCOL), each run's median relative
   to the series' median: a quiet host stays near 1.0.
2. Estimators: `--n` held-out random candidates (benchmarks/predictor_accuracy.py's generator, seed 999, not an
   accuracy seed), each estimated twice (A, B) from PASSES passes over the list, `--gap-s` seconds between passes
   (the full benchmark's passes are ~40 s apart); for each figure, the share of candidates whose A and B agree
   within 5 %, over `--reps` repetitions.

Usage: python benchmarks/timing_repeatability.py [--n 10] [--reps 2] [--gap-s 4] [--series-s 60]
Writes results/timing_repeatability.json. Stop other work on the machine first (it records the load it saw).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from predictor_accuracy import random_candidates

from hwkd.hw.export import export_step_onnx
from hwkd.hw.measure import Protocol, Runner, timed
from hwkd.hw.predict import PASS_PROTOCOL, PASSES, RUN_QUANTILE
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.registry import create_model
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save

FIGURES = {
    f"min over {PASSES} passes of p{RUN_QUANTILE} (calibration v7)":
        lambda r: np.min([[np.percentile(x, RUN_QUANTILE) for x in p] for p in r], 0),
    f"min over {PASSES} passes of p50": lambda r: np.min([[np.median(x) for x in p] for p in r], 0),
    f"median over {PASSES} passes of p{RUN_QUANTILE}":
        lambda r: np.median([[np.percentile(x, RUN_QUANTILE) for x in p] for p in r], 0),
    "min over 2 passes of p50 (v6's estimator; v6's runs were 0.2 s)":
        lambda r: np.min([[np.median(x) for x in p] for p in r[:2]], 0),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--gap-s", type=float, default=4.0)
    ap.add_argument("--series-s", type=float, default=60.0)
    a = ap.parse_args()
    proto = Protocol(**PASS_PROTOCOL)
    tmp = Path(tempfile.mkdtemp(prefix="hwkd-repeat-"))
    one = export_step_onnx(create_model("cpu-student-causal").eval(), tmp / "one.onnx")
    files = []
    for i, cfg in enumerate(random_candidates(a.n, 999)):
        torch.manual_seed(i)
        files.append(export_step_onnx(DPDCRN(cfg).eval(), tmp / f"c{i}.onnx"))
    with LoadMeter() as load:
        series, t0 = [], time.perf_counter()
        runner = Runner("onnxruntime", "hop", 1, onnx=one)
        while time.perf_counter() - t0 < a.series_s:
            series.append(float(np.median(timed(runner, proto)[0])))
        rel = np.array(series) / np.median(series)

        def passes():
            out = []
            for k in range(PASSES):
                out.append([timed(Runner("onnxruntime", "hop", 1, onnx=f), proto)[0] for f in files])
                if k < PASSES - 1:
                    time.sleep(a.gap_s)
            return out
        spreads = {k: [] for k in FIGURES}
        for _ in range(a.reps):
            ra, rb = passes(), passes()
            for k, f in FIGURES.items():
                x, y = f(ra), f(rb)
                spreads[k] += (np.abs(x - y) / np.minimum(x, y)).tolist()
    res = {"machine": fingerprint(), "protocol": proto.__dict__, "passes": PASSES, "gap_s": a.gap_s,
           "series": {"runs": len(series), "median_ms": float(np.median(series)),
                      "share_above_1_3x": float(np.mean(rel > 1.3)), "p90_over_p10": float(
                          np.percentile(series, 90) / np.percentile(series, 10)), "relative": rel.round(3).tolist()},
           "figures": {k: {"pairs": len(v), "within_5pct": float(np.mean(np.array(v) <= 0.05)),
                           "median_disagreement": float(np.median(v)), "p90_disagreement": float(np.percentile(v, 90)),
                           "max_disagreement": float(np.max(v))} for k, v in spreads.items()},
           "other_load": load.other_load}
    print(f"series: {len(series)} runs, {res['series']['share_above_1_3x']:.0%} above 1.3x the median, "
          f"p90/p10 {res['series']['p90_over_p10']:.2f}")
    for k, v in res["figures"].items():
        print(f"{k:<45} within 5 %: {v['within_5pct']:.0%}  median {v['median_disagreement']:.1%}  "
              f"p90 {v['p90_disagreement']:.1%}")
    save("timing_repeatability", res)


if __name__ == "__main__":
    main()
