"""How noisy the balanced KD weight is: λ of one student and scheme across seeds, under each balancing rule.

λ is set on a run's first batches so that λ·‖∇θ L_KD‖ = ratio·‖∇θ L_SE‖ (hwkd.train.objective). This measures
the per-batch gradient norms behind it — the student at its initial weights for each seed, the embedded
teacher, the batches a run of that seed trains on first (on-the-fly mixing, batch 8 of 2-s segments) — and
the λ each rule of hwkd.train.recipe.BALANCE_RULES would set from them. A rule that sets λ several-fold apart
between seeds of one student gives the seeds different KD strengths under one "ratio".

    python benchmarks/balance_noise.py [--student kd-small] [--scheme fitnet] [--seeds 0,1,2,10000] [--batches 12]
"""

import argparse
import statistics
import time

import torch

from hwkd.data.synth import default_dataset
from hwkd.models.checkpoint import load_model
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.enhancer import Enhancer
from hwkd.models.registry import resolve_config
from hwkd.models.teacher import embedded_teacher_path
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.config import TrainConfig
from hwkd.train.objective import KDObjective
from hwkd.train.recipe import BALANCE_RULES, first_batches, training_set

from _common import save


def pick(norms: list, n: int, statistic: str) -> float:
    """What a rule takes of the per-batch norms: the mean or the median of the first n."""
    return statistics.median(norms[:n]) if statistic == "median" else sum(norms[:n]) / len(norms[:n])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="kd-small")
    ap.add_argument("--scheme", default="fitnet")
    ap.add_argument("--seeds", default="0,1,2,10000", help="the 600-step KD matrix's seeds and its tuning seed")
    ap.add_argument("--batches", type=int, default=12, help="first batches measured per seed")
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="balance_noise")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = load_model(embedded_teacher_path())[0].eval()
    data = default_dataset(1, progress=False)
    cfg = resolve_config(a.student, hop=teacher.cfg.hop)
    seeds, out = [int(s) for s in a.seeds.split(",")], {}
    t0 = time.perf_counter()
    with LoadMeter() as load:
        for seed in seeds:
            tcfg = TrainConfig(epochs=1, batch_size=8, segment_s=2.0, lr=2e-3, seed=seed)
            ts = training_set(data, "train", 2.0, 1, seed)
            torch.manual_seed(seed)                 # the student's initial weights, as a run of this seed draws them
            student = DPDCRN(cfg)
            obj = KDObjective(teacher, student, a.scheme, 8, 32000)
            se, kd = obj.batch_grad_norms(Enhancer(student), first_batches(ts, tcfg, a.batches, "cpu"))
            lams = {rule: a.ratio * pick(se, n, stat) / pick(kd, n, stat) for rule, (n, stat) in BALANCE_RULES.items()}
            out[str(seed)] = {"grad_norms_se": [round(g, 4) for g in se], "grad_norms_kd": [round(g, 4) for g in kd],
                              "lam": lams}
            print(f"seed {seed}: ‖∇L_SE‖ per batch {[round(g, 2) for g in se]}; λ "
                  + ", ".join(f"{r} {v:.3g}" for r, v in lams.items()), flush=True)
    spread = {r: max(v["lam"][r] for v in out.values()) / min(v["lam"][r] for v in out.values())
              for r in BALANCE_RULES}
    every = [g for v in out.values() for g in v["grad_norms_se"]]
    med = statistics.median(every)
    rec = {"student": a.student, "scheme": a.scheme, "ratio": a.ratio, "seeds": seeds, "batches": a.batches,
           "batch": "8 x 2 s, on-the-fly mixing", "teacher": str(embedded_teacher_path()), "per_seed": out,
           "lam_max_over_min": {r: round(v, 3) for r, v in spread.items()},
           "se_norm_median": round(med, 4),
           "se_batches_over_3x_median": f"{sum(g > 3 * med for g in every)} of {len(every)}",
           "threads": a.threads, "wall_s": round(time.perf_counter() - t0, 1), "load": load.as_dict(),
           "machine": fingerprint()}
    print("λ max/min over seeds: " + ", ".join(f"{r} {v:.2f}" for r, v in spread.items()))
    save(a.name, rec)


if __name__ == "__main__":
    main()
