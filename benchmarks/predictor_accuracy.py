"""Latency-predictor accuracy on local targets: calibrate from micro-benchmarks only, then predict and measure
the per-hop latency of N held-out random streaming DPDCRN candidates (none of them is a calibration model).
Goal: >= 95 % of candidates within +-10 % of measured, for each of cpu 1 thread, cpu 2 threads (ONNX Runtime)
and openvino-cpu (1 thread).

    python benchmarks/predictor_accuracy.py [--n 50] [--seed 0] [--combos onnxruntime:1,onnxruntime:2,openvino:1]

Each seed draws other candidates. A seed whose rows informed a change of the predictor is no longer
held out for it: results/predictor_accuracy_v2_seed0.json and _v3_seed1.json are such development runs
(README, "Hardware figures"), results/predictor_accuracy.json the run on a seed the predictor never saw.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from hwkd.hw.export import export_step_onnx, to_openvino
from hwkd.hw.measure import Protocol, _Runner, _timed
from hwkd.hw.predict import CALIB_VERSION, Predictor, anchor_configs, calibrate
from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def random_candidates(n: int, seed: int) -> list[DPDCRNConfig]:
    rng = np.random.default_rng(seed)
    out, anchors = [], set(anchor_configs())
    while len(out) < n:
        c = int(rng.choice([8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64]))
        heads = int(rng.choice([h for h in (0, 1, 2, 4) if h == 0 or (c // 2) % h == 0]))
        cfg = (DPDCRNConfig(channels=c, layers=int(rng.integers(1, 4)), depth=int(rng.integers(1, 5)),
                                heads=heads, gru_hidden=int(rng.integers(2, 17)) * 4,
                                intra_bidirectional=bool(rng.integers(2)), causal=True, time_attention="none",
                                in_channels=int(rng.choice([1, 4]))))
        if cfg not in anchors:          # held out: never a calibration model
            out.append(cfg)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--combos", default="onnxruntime:1,onnxruntime:2,openvino:1")
    args = ap.parse_args()
    combos = [(c.split(":")[0], int(c.split(":")[1])) for c in args.combos.split(",")]
    proto = Protocol(warmup=20, runs=100, min_s=0.2)
    cands = random_candidates(args.n, args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, cfg in enumerate(cands):
            torch.manual_seed(i)
            onnx = export_step_onnx(DPDCRN(cfg).eval(), Path(tmp) / f"c{i}.onnx")
            files.append((onnx, to_openvino(onnx, Path(tmp) / f"c{i}.xml")))
        for rt, th in combos:
            calib = calibrate(rt, th, progress=None)
            pred = Predictor(calib)
            rows = []
            with LoadMeter() as load:
                for cfg, (onnx, xml) in zip(cands, files):
                    runner = _Runner(rt, "hop", th, onnx=onnx, ir=xml)
                    wall, own, _ = _timed(runner, proto)
                    meas = float(np.median(own if own is not None else wall))
                    p = pred.predict_hop_ms(cfg)
                    rows.append({"config": cfg.to_dict(), "measured_ms": meas, "predicted_ms": p,
                                 "rel_err": p / meas - 1})
            err = np.array([r["rel_err"] for r in rows])
            within = float(np.mean(np.abs(err) <= 0.10))
            results[f"{rt}:{th}"] = {"within_10pct": within, "meets_goal": within >= 0.95,
                                     "median_abs_err": float(np.median(np.abs(err))),
                                     "max_abs_err": float(np.abs(err).max()), "calibration_s": calib["seconds"],
                                     "calibration_other_load": calib["other_load"],
                                     "measure_other_load": load.other_load, "rows": rows,
                                     "calibration": calib}
            print(f"{rt} {th} thr: {within:.0%} within +-10 % (median |err| {np.median(np.abs(err)):.1%}, "
                  f"max {np.abs(err).max():.1%}); calibration {calib['seconds']} s")
    save("predictor_accuracy", {"n": args.n, "seed": args.seed, "calibration_version": CALIB_VERSION,
                                "protocol": proto.__dict__, "results": results,
                                "fingerprint": fingerprint()})


if __name__ == "__main__":
    main()
