"""How much a KD-matrix cell's result moves with the intra-op thread count alone, or the host alone.

Same student, scheme, seed, data order and budget; only torch's intra-op thread count (or the CPU the cell
trained on) differs, which changes CPU float sums in their last bits, and training amplifies that. Give two
cell trees of one `hwkd compare` matrix trained under the two conditions (e.g. cells moved aside and
retrained with another `--threads`/`--workers`, or retrained on another machine):

    python benchmarks/compare_threads.py RUN/cells-threads-default RUN/cells
    python benchmarks/compare_threads.py --name compare_hosts EARLIER-HOST-CELLS THIS-HOST-CELLS

Pairs every cell present in both (student/scheme/seedN/result.json), prints and writes
results/NAME.json (default compare_threads): per cell the two thread counts and CPUs and the differences
(B − A) in every metric, and the mean absolute difference per metric. Compare those with the paired KD
gains they would blur.
"""

import argparse
import statistics
from pathlib import Path

from hwkd.experiments.compare import METRICS, load_cell

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path, help="cell tree A (e.g. trained with the default thread count)")
    ap.add_argument("b", type=Path, help="cell tree B (the same cells trained with another count)")
    ap.add_argument("--name", default="compare_threads", help="results/NAME.json")
    a = ap.parse_args()
    pairs = []
    for ra in sorted(a.a.glob("*/*/seed*/result.json")):
        rel = ra.parent.relative_to(a.a)
        if not (a.b / rel / "result.json").is_file():
            continue
        ca, cb = load_cell(ra.parent), load_cell(a.b / rel)
        pairs.append({"cell": str(rel), "threads_a": ca.get("threads"), "threads_b": cb.get("threads"),
                      "cpu_a": ca.get("cpu", "not recorded"), "cpu_b": cb.get("cpu", "not recorded"),
                      **{f"{m}_a": ca["enhanced"][m] for m in METRICS},
                      **{f"{m}_b": cb["enhanced"][m] for m in METRICS},
                      **{f"d_{m}": cb["enhanced"][m] - ca["enhanced"][m] for m in METRICS}})
    if not pairs:
        raise SystemExit(f"no cell is in both {a.a} and {a.b}: give two cell trees of one run")
    mean_abs = {m: statistics.mean(abs(p[f"d_{m}"]) for p in pairs) for m in METRICS}
    max_abs = {m: max(abs(p[f"d_{m}"]) for p in pairs) for m in METRICS}
    for p in pairs:
        cpu = f", cpu {p['cpu_a']} -> {p['cpu_b']}" if p["cpu_a"] != p["cpu_b"] else ""
        print(f"{p['cell']}: threads {p['threads_a']} -> {p['threads_b']}{cpu}: "
              + ", ".join(f"{m} {p[f'd_{m}']:+.3f}" for m in METRICS))
    print("mean |difference|: " + ", ".join(f"{m} {v:.3f}" for m, v in mean_abs.items()))
    save(a.name, {"a": str(a.a), "b": str(a.b), "pairs": pairs, "mean_abs_difference": mean_abs,
                  "max_abs_difference": max_abs})


if __name__ == "__main__":
    main()
