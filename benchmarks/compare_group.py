"""Cells that share a seed trained side by side, sharing the frozen teacher's forward: the case for
`hwkd compare --group N`.

The same small KD matrix (kd_compare's students and settings: batch 8 of 2-s segments, lr 2e-3, λ balanced, the
embedded teacher, on-the-fly mixing; `--steps` steps per cell, one validation, the first 2 test and out-of-domain
utterances scored) trained twice from scratch in scratch run folders: with `--workers W` processes of one cell at a
time (group 1), then with each worker training up to `--group G` cells of one seed side by side in threads. Recorded:
the wall clock of each whole run, every cell's training time (its history's train_elapsed_s: steps, balancing and
the teacher's forward included; validation, evaluation excluded), and whether the two runs' cells end with the same
weights bit for bit (they must: sharing never changes what a cell computes).

    python benchmarks/compare_group.py [--students kd-medium] [--schemes fitnet,at,response,i2srf-tfckd] [--seeds 2]
                                       [--steps 20] [--workers 2] [--group 4] [--name compare_group]

Stop other work on the machine first (it records the load it saw).
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from hwkd.experiments.compare import CompareConfig, run_compare_parallel
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def run(out: Path, cc: CompareConfig, workers: int, group: int) -> dict:
    t0 = time.perf_counter()
    with LoadMeter() as load:
        results = run_compare_parallel(out, cc, None, workers, group=group, progress=False)
    wall = time.perf_counter() - t0
    cells = {}
    for r in results:
        cdir = out / "cells" / r["student"] / r["scheme"] / f"seed{r['seed']}"
        hist = [json.loads(x) for x in (cdir / "history.jsonl").read_text().splitlines() if x.strip()]
        cells[f"{r['student']}/{r['scheme']}/seed{r['seed']}"] = {
            "train_s": hist[-1]["train_elapsed_s"], "step_s_median": hist[-1]["step_s_median"],
            "cell_s": r["train_s"], "test_si_sdr_db": r["enhanced"]["si_sdr_db"]}
    return {"workers": workers, "group": group, "wall_s": round(wall, 1), "cells": cells, "load": load.as_dict()}


def same_weights(a: Path, b: Path, keys) -> dict:
    out = {}
    for k in keys:
        wa, wb = (torch.load(x / "cells" / k / "last.pt", weights_only=True)["state_dict"] for x in (a, b))
        out[k] = all(torch.equal(wa[n], wb[n]) for n in wa)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", default="kd-medium")
    ap.add_argument("--schemes", default="fitnet,at,response,i2srf-tfckd")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--name", default="compare_group")
    a = ap.parse_args()
    cc = CompareConfig(schemes=a.schemes.split(","), students=a.students.split(","), seeds=a.seeds, epochs=1,
                       batch_size=8, segment_s=2.0, lr=2e-3, max_steps_per_epoch=a.steps, val_pesq_clips=0,
                       eval_split="test", eval_limit=2)
    tmp = Path(tempfile.mkdtemp(prefix="hwkd-compare-group-"))
    try:
        alone = run(tmp / "alone", cc, a.workers, 1)
        grouped = run(tmp / "grouped", cc, a.workers, a.group)
        same = same_weights(tmp / "alone", tmp / "grouped", alone["cells"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    train_alone = sum(c["train_s"] for c in alone["cells"].values())
    train_grouped = sum(c["train_s"] for c in grouped["cells"].values())
    rec = {"settings": {**vars(a), "batch": 8, "segment_s": 2.0}, "alone": alone, "grouped": grouped,
           "wall_ratio": round(alone["wall_s"] / grouped["wall_s"], 3),
           # cells' training time summed: alone, each cell's own; grouped, cells overlap in threads, so the ratio of
           # the sums understates the gain (the wall clock ratio is the figure)
           "train_s_sum": {"alone": round(train_alone, 1), "grouped": round(train_grouped, 1)},
           "same_weights": same, "all_same": all(same.values()), "machine": fingerprint()}
    save(a.name, rec, teacher=True)
    print(f"wall clock: {alone['wall_s']} s one cell at a time, {grouped['wall_s']} s grouped by {a.group} "
          f"(x{rec['wall_ratio']}); same weights: {rec['all_same']}")


if __name__ == "__main__":
    main()
