"""Measurement fidelity: hwkd's OpenVINO median latency vs OpenVINO's own benchmark_app, same IR and threads.

For each model (a causal student's streaming step IR, measured per hop; a non-causal student's offline IR
on 1 s of audio) and thread count, both tools run alternately `--reps` times; each side's figure is the
median of its medians. Goal: |hwkd / benchmark_app - 1| <= 5 %.

    python benchmarks/ov_fidelity.py [--reps 3]
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hwkd.hw.export import export_all
from hwkd.hw.measure import Protocol, measure_isolated
from hwkd.models.registry import create_model
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import median, save

BENCHMARK_APP = str(Path(sys.executable).with_name("benchmark_app"))


def benchmark_app(xml: Path, threads: int, shape: str | None, niter: int) -> float:
    cmd = [BENCHMARK_APP, "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", str(threads),
           "-infer_precision", "f32", "-api", "sync", "-niter", str(niter)]
    if shape:
        cmd += ["-shape", shape]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Median:\s+([\d.]+)\s+(ms|us)", out)
    return float(m.group(1)) / (1000 if m.group(2) == "us" else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    cases = [("cpu-student-causal", "hop"), ("cpu-student", "offline")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, LoadMeter() as load:
        for preset, mode in cases:
            torch.manual_seed(0)
            net = create_model(preset)
            ex = export_all(net, Path(tmp) / preset)
            xml = ex.step_ir if mode == "hop" else ex.offline_ir
            shape = None if mode == "hop" else f"features[1,2,{16000 // net.cfg.hop},257]"
            for th in threads:
                ours, theirs = [], []
                for _ in range(args.reps):
                    proto = Protocol(warmup=100, runs=1000 if mode == "hop" else 150, min_s=2.0)
                    m = measure_isolated("openvino", mode, th, ir=xml, hop=net.cfg.hop, protocol=proto)
                    ours.append(m.p50_ms)
                    theirs.append(benchmark_app(xml, th, shape, proto.runs))
                r = {"model": preset, "mode": mode, "threads": th, "hwkd_p50_ms": median(ours),
                     "benchmark_app_median_ms": median(theirs), "hwkd_runs": ours, "benchmark_app_runs": theirs}
                r["ratio"] = r["hwkd_p50_ms"] / r["benchmark_app_median_ms"]
                r["within_5pct"] = abs(r["ratio"] - 1) <= 0.05
                rows.append(r)
                print(f"{preset:<20} {mode:<8} {th} thr  hwkd {r['hwkd_p50_ms']:.3f} ms  benchmark_app "
                      f"{r['benchmark_app_median_ms']:.3f} ms  ratio {r['ratio']:.3f}")
    save("ov_fidelity", {"rows": rows, "all_within_5pct": all(r["within_5pct"] for r in rows),
                         "settings": "hwkd: NUM_STREAMS 1, INFERENCE_NUM_THREADS N, f32, sync infer, states carried "
                                     "zero-copy; benchmark_app: -hint none -nstreams 1 -nthreads N "
                                     "-infer_precision f32 -api sync", "reps": args.reps,
                         "load": load.as_dict(),
                         "fingerprint": fingerprint()})


if __name__ == "__main__":
    main()
