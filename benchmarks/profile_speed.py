"""Time to profile one candidate: MACs (+ cross-check), ONNX and OpenVINO export with parity checks, and
ONNX Runtime and OpenVINO per-hop latency (quick protocol, 1 thread). Goal: <= 15 s on the 2-core machine.

    python benchmarks/profile_speed.py [--reps 3] [--model cpu-student-causal]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hwkd.hw.measure import Protocol
from hwkd.hw.profile import profile
from hwkd.models.registry import create_model
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import median, save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default="cpu-student-causal")
    args = ap.parse_args()
    times, loads, last = [], [], None
    for _ in range(args.reps):
        torch.manual_seed(0)
        net = create_model(args.model)
        with tempfile.TemporaryDirectory() as tmp, LoadMeter() as load:
            t = time.perf_counter()
            last = profile(net, "cpu", Path(tmp), runtimes=["onnxruntime", "openvino"], threads=[1],
                           protocol=Protocol.named("quick"), check_macs=True, progress=lambda *a: None)
            times.append(time.perf_counter() - t)
        loads.append(load.other_load)
        print(f"{args.model}: {times[-1]:.2f} s (other load {load.other_load:.2f})")
    lat = {m["runtime"]: round(m["p50_ms"], 4) for m in last["latency"]}
    save("profile_speed", {"model": args.model, "median_s": median(times), "runs_s": times, "goal_s": 15,
                           "meets_goal": median(times) <= 15, "other_load": loads, "p50_ms_per_hop": lat,
                           "macs_per_s": last["macs_per_s"], "params": last["params"], "fingerprint": fingerprint()})


if __name__ == "__main__":
    main()
