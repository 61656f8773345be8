"""Does torch.compile cut a plain (no-KD) training step of the time-to-quality student on this CPU?

One data-parallel worker's share of the recipe's step: batch 4 of 2-s segments (half of batch 8), one thread,
the plain SE loss (hwkd.train.losses.se_loss), AdamW. Each mode runs in its own process (a fresh dynamo cache):
the first step (compiling, for torch.compile) and the median / min of the next --steps. Random audio: the cost of
a step does not depend on what the samples are. Writes results/compile_step.json.
Usage: python benchmarks/compile_step.py [--steps 12] [--modes eager,compile]
"""

import argparse
import json
import subprocess
import sys
import time

from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save

STUDENT = dict(channels=20, layers=1, depth=3, heads=1, gru_hidden=32, causal=True, time_attention="none")


def one(mode: str, steps: int) -> dict:
    import torch

    from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
    from hwkd.models.enhancer import Enhancer
    from hwkd.train.losses import se_loss
    torch.set_num_threads(1)
    torch.manual_seed(0)
    enh = Enhancer(DPDCRN(DPDCRNConfig(**STUDENT)))
    opt = torch.optim.AdamW(enh.parameters(), 2e-3)
    noisy, clean = torch.randn(4, 1, 32000) * 0.1, torch.randn(4, 32000) * 0.1

    def step():
        loss, _ = se_loss(enh(noisy), clean, enh.n_fft, enh.hop)
        opt.zero_grad()
        loss.backward()
        opt.step()

    f = torch.compile(step) if mode == "compile" else step
    t0 = time.perf_counter()
    f()
    first = time.perf_counter() - t0
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return {"first_step_s": round(first, 3), "median_step_s": round(ts[len(ts) // 2], 4), "min_step_s": round(ts[0], 4),
            "steps": steps}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)     # the child process: one mode
    a = ap.parse_args()
    if a.steps < 1:
        raise SystemExit("compile_step.py: --steps must be 1 or more")
    if a.one:
        print(json.dumps(one(a.one, a.steps)))
        return
    res = {}
    with LoadMeter() as m:
        for mode in a.modes.split(","):
            if mode not in ("eager", "compile"):
                raise SystemExit(f"compile_step.py: unknown mode {mode!r}; use eager and/or compile")
            p = subprocess.run([sys.executable, __file__, "--one", mode, "--steps", str(a.steps)],
                               capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"compile_step.py: the {mode} run failed:\n{p.stderr[-2000:]}")
            res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
            print(mode, res[mode], flush=True)
    save("compile_step", {"student": STUDENT, "batch": 4, "segment_s": 2.0, "threads": 1, "modes": res,
                          "load": m.as_dict(), "machine": fingerprint()})


if __name__ == "__main__":
    main()
