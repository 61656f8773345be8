"""What the cumulative causal norm costs per hop against the frame-wise norm it replaced (2026-11-30).

A causal DPDCRN's norms normalise with the statistics of all frames so far (`causal_norm: cumulative`):
hop by hop each norm adds its running sums to the state and reads them back. This measures the per-hop
latency of the same seeded model with `causal_norm: frame` and `cumulative`, for each preset and runtime, in
alternating rounds (so a change of machine load hits both), with hwkd's measurement protocol; the ratio of
medians says how much the latency figures measured before the change move.

    python benchmarks/causal_norm_cost.py [--models cpu-student-causal,kd-small] [--rounds 3]
"""

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from hwkd.hw.export import export_step_onnx, to_openvino
from hwkd.hw.measure import Protocol, measure
from hwkd.hw.predict import model_sizes
from hwkd.models import DPDCRN
from hwkd.models.registry import resolve_config
from hwkd.sysinfo import fingerprint

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cpu-student-causal")
    ap.add_argument("--runtimes", default="onnxruntime,openvino")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    proto = Protocol(warmup=50, runs=300, min_s=1.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            base = resolve_config(name)
            if not base.causal:
                base = dataclasses.replace(base, causal=True, time_attention="none")
            files = {}
            for norm in ("frame", "cumulative"):
                cfg = dataclasses.replace(base, causal_norm=norm)
                torch.manual_seed(0)
                onnx = export_step_onnx(DPDCRN(cfg), Path(tmp) / f"{name}-{norm}.onnx")
                files[norm] = (onnx, to_openvino(onnx, onnx.with_suffix(".xml")), model_sizes(cfg))
            for rt in a.runtimes.split(","):
                p50 = {"frame": [], "cumulative": []}
                for _ in range(a.rounds):
                    for norm in ("frame", "cumulative"):
                        onnx, ir, _ = files[norm]
                        m = measure(rt, "hop", 1, onnx=onnx if rt == "onnxruntime" else None,
                                    ir=ir if rt == "openvino" else None, protocol=proto)
                        p50[norm].append(m.p50_ms)
                med = {k: statistics.median(v) for k, v in p50.items()}
                rows.append({"model": name, "runtime": rt, "threads": 1, "p50_ms_rounds": p50,
                             "median_p50_ms": med, "ratio_cumulative_over_frame": med["cumulative"] / med["frame"],
                             "state_elements": {k: files[k][2][1] for k in files}, "timer": m.timer})
                print(f"{name} {rt}: frame {med['frame']:.3f} ms, cumulative {med['cumulative']:.3f} ms per hop "
                      f"(x{med['cumulative'] / med['frame']:.3f})")
    save("causal_norm_cost", {"protocol": dataclasses.asdict(proto), "rounds": a.rounds, "rows": rows,
                              "machine": fingerprint()})


if __name__ == "__main__":
    main()
