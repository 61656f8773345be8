"""Cells side by side vs one cell on all cores: the case for `hwkd compare --workers N`.

A compare cell is one training run of a small student. This measures the training-step time of the
kd_compare students (batch 8 of 2-s segments, embedded teacher, forward + backward + Adam) in one process
with every core as intra-op threads, and in N = cores processes with one thread each, all stepping at once;
throughput ratio = (N / median step of a 1-thread process side by side) / (1 / median step of the lone
process). Above 1, `--workers N` finishes a matrix sooner.

    python benchmarks/compare_parallel.py [--student kd-medium] [--schemes none,i2srf-tfckd] [--steps 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from kd_compare import SIZES

from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def steps(student: str, scheme: str, threads: int, n: int) -> list[float]:
    """In this process: n timed steps after one warm-up, seconds each."""

    import torch

    from hwkd.models import create_model
    from hwkd.models.checkpoint import load_model
    from hwkd.models.enhancer import Enhancer
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.train.objective import KDObjective
    from hwkd.train.trainer import SEObjective
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = create_model(student)
    teacher, _ = load_model(embedded_teacher_path())
    length = 32000
    batch = {"noisy": 0.05 * torch.randn(8, 1, length), "clean": 0.05 * torch.randn(8, length)}
    model = Enhancer(net)
    obj = SEObjective() if scheme == "none" else KDObjective(teacher, net, scheme, 8, length)
    params = list(model.parameters()) + [p for m in obj.modules() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4)
    out = []
    for k in range(n + 1):
        t0 = time.perf_counter()
        loss, _ = obj(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k:
            out.append(time.perf_counter() - t0)
    return out


def spawn(student, scheme, threads, n):
    return subprocess.Popen([sys.executable, __file__, "--child", student, scheme, str(threads), str(n)],
                            stdout=subprocess.PIPE, text=True)


def main():
    if sys.argv[1:2] == ["--child"]:
        student, scheme, threads, n = sys.argv[2:6]
        print(json.dumps(steps(student, scheme, int(threads), int(n))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="kd-medium", choices=sorted(SIZES))
    ap.add_argument("--schemes", default="none,i2srf-tfckd")
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    res = {"student": a.student, "batch": 8, "segment_s": 2.0, "cores": cores, "timed_steps": a.steps, "schemes": {}}
    with LoadMeter() as load:
        for scheme in a.schemes.split(","):
            lone = spawn(a.student, scheme, cores, a.steps)
            lone_s = json.loads(lone.communicate()[0])
            side = [spawn(a.student, scheme, 1, a.steps) for _ in range(cores)]
            side_s = [json.loads(p.communicate()[0]) for p in side]
            m_lone = statistics.median(lone_s)
            m_side = statistics.median([t for s in side_s for t in s])
            ratio = (cores / m_side) / (1 / m_lone)
            res["schemes"][scheme] = {"lone_threads": cores, "lone_median_step_s": round(m_lone, 3),
                                      "side_by_side_processes": cores, "side_median_step_s": round(m_side, 3),
                                      "throughput_ratio": round(ratio, 3),
                                      "lone_step_s": [round(t, 3) for t in lone_s],
                                      "side_step_s": [[round(t, 3) for t in s] for s in side_s]}
            print(f"{scheme:<14} 1 x {cores} threads {m_lone:.3f} s/step; {cores} x 1 thread {m_side:.3f} s/step "
                  f"each: throughput x{ratio:.2f}")
    res["load"] = load.as_dict()
    res["machine"] = fingerprint()
    save("compare_parallel", res, teacher=True)


if __name__ == "__main__":
    main()
