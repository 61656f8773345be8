"""KD cost: training-step time of a CPU-sized student with each KD scheme vs without KD.

Batch 8 of 2-s segments (the compare/teacher recipe), the embedded teacher, forward (student + frozen
teacher) + backward + Adam over the student and the scheme's own modules; median of --steps steps after
one warm-up, schemes interleaved round-robin so machine noise hits all alike.

    python benchmarks/kd_cost.py [--student cpu-student] [--steps 5]
"""

import argparse
import statistics
import time

import torch

from hwkd.kd.base import schemes
from hwkd.kd.objective import KDObjective
from hwkd.models import create_model
from hwkd.models.checkpoint import load_model
from hwkd.models.enhancer import Enhancer
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.teacher import embedded_teacher_path
from hwkd.train.trainer import SEObjective

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="cpu-student")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--schemes", default="none," + ",".join(sorted(schemes())))
    a = ap.parse_args()
    torch.manual_seed(0)
    teacher, _ = load_model(embedded_teacher_path())
    n = int(a.segment_s * 16000)
    batch = {"noisy": 0.05 * torch.randn(a.batch, 1, n), "clean": 0.05 * torch.randn(a.batch, n)}
    setups = {}
    for scheme in a.schemes.split(","):
        student = Enhancer(create_model(a.student))
        obj = SEObjective() if scheme == "none" else KDObjective(teacher, student.net, scheme, a.batch, n)
        params = list(student.parameters()) + [p for m in obj.modules() for p in m.parameters()]
        setups[scheme] = (student, obj, torch.optim.Adam(params, lr=1e-4), [])

    def step(student, obj, opt):
        loss, _ = obj(student, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with LoadMeter() as load:
        for s in setups.values():
            step(*s[:3])                                    # warm-up
        for _ in range(a.steps):
            for s in setups.values():
                t0 = time.perf_counter()
                step(*s[:3])
                s[3].append(time.perf_counter() - t0)
    base = statistics.median(setups["none"][3])
    res = {"student": a.student, "teacher": "embedded cpu-teacher", "batch": a.batch, "segment_s": a.segment_s,
           "torch_threads": torch.get_num_threads(), "timed_steps": a.steps, "schemes": {}}
    for name, s in setups.items():
        med = statistics.median(s[3])
        res["schemes"][name] = {"median_step_s": round(med, 3), "ratio_vs_none": round(med / base, 3),
                                "step_s": [round(t, 3) for t in s[3]]}
        print(f"{name:<18} {med:.3f} s/step  x{med / base:.2f}")
    res["load"] = load.as_dict()
    res["machine"] = fingerprint()
    save("kd_cost", res)


if __name__ == "__main__":
    main()
