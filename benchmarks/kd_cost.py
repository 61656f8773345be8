"""KD cost: a training step of a student with each KD scheme against the same step without KD, in MACs and
in wall clock.

Batch 8 of 2-s segments (the compare recipe), the embedded teacher, forward (student + frozen teacher) +
backward + Adam over the student and the scheme's own modules. Wall clock: median of --steps steps after one
warm-up, schemes interleaved round-robin so machine noise hits all alike. MACs: one step under torch's
FlopCounterMode (forward + backward; convolutions, matrix products and attention — the GRUs' recurrent
products are not counted by it, the same for every row), MACs = FLOPs / 2. Peak memory: the process's peak
RSS growth during one step of each setup, measured in a fresh subprocess per setup (--memory).

Rows: every scheme at its defaults, and I²SRF-TFCKD as the spec has it (fusion mid width 128, output 64 on
both sides, taps at full resolution: what hwkd ran before), at other mid widths (--mids) and with the taps
pooled to other numbers of bins (--tap-bins), to show what each departure costs.

    python benchmarks/kd_cost.py [--student kd-medium] [--steps 5] [--mids 128,64,32] [--tap-bins 16,8]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hwkd.kd.base import schemes
from hwkd.models import create_model
from hwkd.models.checkpoint import load_model
from hwkd.models.enhancer import Enhancer
from hwkd.models.teacher import embedded_teacher_path
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.objective import KDObjective
from hwkd.train.trainer import SEObjective

from _common import save


def setups(a) -> dict:
    out = {"none": ("none", {})}                  # the reference every ratio is taken against
    for s in a.schemes.split(","):
        out.setdefault(s, (s, {}))
    if "i2srf-tfckd" in out:
        spec = {"fusion_mid": 128, "fusion_out": 64, "tap_bins": None}
        out["i2srf-tfckd (the spec: mid 128, out 64, unpooled)"] = ("i2srf-tfckd", spec)
        for m in filter(None, a.mids.split(",")):
            out[f"i2srf-tfckd (mid {m}, taps pooled to the default)"] = ("i2srf-tfckd", {"fusion_mid": int(m)})
        for b in filter(None, a.tap_bins.split(",")):
            out[f"i2srf-tfckd (taps pooled to {b} bins)"] = ("i2srf-tfckd", {"tap_bins": int(b)})
    return out


def build(a, scheme, options, teacher, n):
    torch.manual_seed(0)
    student = Enhancer(create_model(a.student))
    obj = SEObjective() if scheme == "none" else KDObjective(teacher, student.net, scheme, a.batch, n, lam=0.1,
                                                             **options)
    params = list(student.parameters()) + [p for m in obj.modules() for p in m.parameters()]
    return student, obj, torch.optim.Adam(params, lr=1e-4)


def step(student, obj, opt, batch):
    loss, _ = obj(student, batch)
    opt.zero_grad()
    loss.backward()
    opt.step()


def peak_memory(a, name) -> float:
    """Peak RSS growth (MiB) of one step, in a fresh process (ru_maxrss is a high-water mark)."""
    code = f"""
import resource, sys, torch
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
import kd_cost as k
a = k.argparse.Namespace(**{vars(a)!r})
scheme, options = k.setups(a)[{name!r}]
teacher, _ = k.load_model(k.embedded_teacher_path())
n = int(a.segment_s * 16000)
torch.manual_seed(0)
batch = {{"noisy": 0.05 * torch.randn(a.batch, 1, n), "clean": 0.05 * torch.randn(a.batch, n)}}
s = k.build(a, scheme, options, teacher, n)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
k.step(*s, batch)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    return float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="kd-medium")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setup; 0: MACs only (they do not depend on "
                    "the machine or its load), no wall clock")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--schemes", default=",".join(sorted(schemes())))
    ap.add_argument("--mids", default="128,64")
    ap.add_argument("--tap-bins", default="", help="I²SRF-TFCKD rows with every tap averaged over frequency to "
                    "this many bins (comma-separated; a departure from the spec, see hwkd/kd/i2srf.py)")
    ap.add_argument("--memory", action="store_true", help="also the peak memory of one step per setup")
    ap.add_argument("--name", default="kd_cost")
    a = ap.parse_args()
    if a.steps < 0:
        ap.error(f"--steps {a.steps}: give 0 (MACs only) or more timed steps")
    teacher, _ = load_model(embedded_teacher_path())
    n = int(a.segment_s * 16000)
    torch.manual_seed(0)
    batch = {"noisy": 0.05 * torch.randn(a.batch, 1, n), "clean": 0.05 * torch.randn(a.batch, n)}
    rows = {name: build(a, *spec, teacher, n) for name, spec in setups(a).items()}
    macs = {}
    for name, s in rows.items():
        with FlopCounterMode(display=False) as fc:
            step(*s, batch)
        macs[name] = fc.get_total_flops() / 2
    times = {name: [] for name in rows}
    with LoadMeter() as load:
        for _ in range(a.steps):
            for name, s in rows.items():
                t0 = time.perf_counter()
                step(*s, batch)
                times[name].append(time.perf_counter() - t0)
    base_t = statistics.median(times["none"]) if a.steps else float("nan")
    base_m = macs["none"]
    res = {"student": a.student, "teacher": "embedded cpu-teacher", "batch": a.batch, "segment_s": a.segment_s,
           "torch_threads": torch.get_num_threads(), "timed_steps": a.steps,
           "macs_how": "torch FlopCounterMode over one step (forward + backward), FLOPs / 2; GRU recurrences not "
                       "counted", "schemes": {}}
    for name in rows:
        med = statistics.median(times[name]) if a.steps else float("nan")
        res["schemes"][name] = {"gmacs_per_step": round(macs[name] / 1e9, 3),
                                "macs_ratio_vs_none": round(macs[name] / base_m, 3)}
        if a.steps:
            res["schemes"][name].update(median_step_s=round(med, 3), ratio_vs_none=round(med / base_t, 3),
                                        step_s=[round(t, 3) for t in times[name]])
        if a.memory:
            res["schemes"][name]["peak_rss_growth_mib"] = round(peak_memory(a, name), 1)
        wall = f"{med:.3f} s/step  x{med / base_t:.2f}" if a.steps else "(not timed)"
        print(f"{name:<44} {wall}   {macs[name] / 1e9:.2f} GMAC  "
              f"x{macs[name] / base_m:.2f}" + (f"  {res['schemes'][name]['peak_rss_growth_mib']:.0f} MiB"
                                                if a.memory else ""))
    res["load"] = load.as_dict()
    res["machine"] = fingerprint()
    save(a.name, res, teacher=True)
    print(json.dumps({k: (v.get("ratio_vs_none"), v["macs_ratio_vs_none"]) for k, v in res["schemes"].items()}))


if __name__ == "__main__":
    main()
