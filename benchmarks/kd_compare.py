"""KD schemes across student sizes on the embedded default, at one fixed training budget.

Every scheme (no KD, the baselines, I²SRF-TFCKD) x 3 student sizes x 3 seeds, each distilled from the
embedded teacher with the same budget, evaluated on the mono test split; the table (mean ± 95 % CI over
seeds, gain over no-KD paired by seed, I²SRF-TFCKD against every other scheme) goes to
reports/kd-compare-BUDGET/ and benchmarks/results/kd_compare.json. It is `hwkd compare` with fixed
settings, so an interrupted run resumes where it stopped; --workers N trains N cells side by side.

    python benchmarks/kd_compare.py [--steps 150] [--seeds 3] [--schemes ...] [--students ...] [--workers N]

Cost on the 2-core machine: an I²SRF-TFCKD step (batch 8 of 2-s segments) takes ~7.5 s and a no-KD step
~0.9 s (benchmarks/kd_cost.py), so the default matrix (8 schemes x 3 sizes x 3 seeds x 150 steps) is many
hours of CPU; use --steps / --seeds / --schemes to fit a budget, and say so when quoting it.
"""

import argparse
import json
from pathlib import Path

from hwkd.kd.base import schemes
from hwkd.kd.compare import CompareConfig, report, run_compare, run_compare_parallel
from hwkd.paths import hwkd_home
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.teacher import embedded_teacher_path

from _common import save

BASELINES = ("none", "response", "fitnet", "at", "pkt-frame", "semckd", "reviewkd")
# three sizes below the embedded teacher (376,686 parameters), as config files of the DPDCRN family
SIZES = {"kd-small": dict(channels=12, layers=1, depth=2, heads=1, gru_hidden=12),
         "kd-medium": dict(channels=24, layers=1, depth=3, heads=2, gru_hidden=24),
         "kd-large": dict(channels=32, layers=2, depth=4, heads=2, gru_hidden=32)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150, help="training steps per run (one epoch capped)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--schemes", default=",".join(BASELINES + ("i2srf-tfckd",)))
    ap.add_argument("--students", default=",".join(SIZES))
    ap.add_argument("--eval-limit", type=int, default=None, help="test utterances (default: all 100)")
    ap.add_argument("--workers", type=int, default=1, help="cells side by side (hwkd compare --workers)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report the cells finished so far (the run may go on in another process)")
    a = ap.parse_args()
    unknown = [s for s in a.schemes.split(",") if s != "none" and s not in schemes()]
    assert not unknown, f"unknown schemes {unknown}"
    cfg_dir = hwkd_home() / "kd-compare-students"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    students = []
    for name in a.students.split(","):
        p = cfg_dir / f"{name}.yaml"
        p.write_text("".join(f"{k}: {v}\n" for k, v in SIZES[name].items()))
        students.append(str(p))
    cc = CompareConfig(schemes=a.schemes.split(","), students=students, seeds=a.seeds, epochs=1, batch_size=8,
                       segment_s=2.0, lr=2e-3, lam=0.1, max_steps_per_epoch=a.steps, val_pesq_clips=5,
                       eval_split="test", eval_limit=a.eval_limit, threads=None)
    out = hwkd_home() / "runs" / f"kd-compare-{a.steps}steps"
    with LoadMeter() as load:
        if a.workers > 1 and not a.report_only:
            results = run_compare_parallel(out, cc, embedded_teacher_path(), a.workers)
        else:
            results = run_compare(out, cc, embedded_teacher_path(), train_missing=not a.report_only)
    summary = report(results, Path(__file__).resolve().parents[1] / "reports" / out.name, cc)
    save("kd_compare", {"settings": summary["settings"], "cells_finished": summary["cells_finished"],
                        "cells_total": summary["cells_total"], "rows": summary["rows"], "cells": results,
                        "load": load.as_dict(), "machine": fingerprint()})
    print(json.dumps(summary["rows"][:3], indent=1))


if __name__ == "__main__":
    main()
