"""How strongly does in-place distillation pull? Gradient norms of a sub-network's L_SE and of its in-place loss.

In the sandwich (hwkd.train.supernet.SandwichObjective) every sub-network but the largest learns L_SE against the
clean target and, with `--inplace-kd W`, W times the same loss against the largest network's (detached) output.
L_SE's SI-SDR term is a log ratio: its gradient grows as the residual shrinks, and a sub-network is much closer to
the largest's output than to the clean speech, so W = 1 is not "as much as L_SE". This measures, on a supernet
state, over the shared weights and the sandwich's own sub-networks and training batches:
‖∇ L_SE‖, ‖∇ L_in‖ (and each split into its SI-SDR and spectral parts), their ratio, and the SI-SDR of each
sub-network's output against the clean speech and against the largest's output. A weight W makes the in-place
gradient W · ratio times L_SE's.

    python benchmarks/supernet_inplace_grad.py --start RUN [--batches 4] [--threads 2]
    python benchmarks/supernet_inplace_grad.py --from-git acc3a79      # the state supernet_inplace_kd.py forks
"""

import argparse
import statistics
from pathlib import Path

import torch
from supernet_inplace_kd import STATE, start_from_git

from hwkd.data.synth import default_dataset
from hwkd.models.checkpoint import read_checkpoint
from hwkd.models.enhancer import Enhancer
from hwkd.paths import hwkd_home
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.losses import compressed_spectral, neg_si_sdr, se_loss
from hwkd.train.objective import _grad_norm as grad_norm  # the one λ balancing uses
from hwkd.train.recipe import first_batches, training_set
from hwkd.train.supernet import SandwichObjective, load_supernet, read_description
from hwkd.train.trainer import TrainConfig

from _common import save


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--start", type=Path, help="a supernet run folder")
    src.add_argument("--from-git", metavar="REV", help="training/supernet/ as committed at REV")
    ap.add_argument("--batches", type=int, default=4, help="training batches (each trains the sandwich's 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=hwkd_home() / "runs" / "supernet_inplace_kd")
    ap.add_argument("--name", default="supernet_inplace_grad")
    a = ap.parse_args()
    if a.batches < 1 or a.threads < 1:
        raise SystemExit("--batches and --threads must be 1 or more")
    start = a.start or start_from_git(a.from_git, a.out / f"start-{a.from_git}")
    if not all((start / name).is_file() for name in STATE):
        raise SystemExit(f"{start} lacks one of {', '.join(STATE)} (a supernet run)")
    torch.set_num_threads(a.threads)
    ck = read_checkpoint(start / "last.pt")["train"]
    r = ck["config"]
    sn, configs = load_supernet(start, "last")
    desc, _, _ = read_description(start / "supernet.json")
    tcfg = TrainConfig(batch_size=r["batch_size"], segment_s=r["segment_s"], seed=r["seed"])
    # the batches of the run's epoch 0 and the sub-networks of steps 0.. (the sandwich's own draws)
    batches = first_batches(training_set(default_dataset(1), "train", tcfg.segment_s, 1, tcfg.seed), tcfg,
                            a.batches, "cpu")
    obj = SandwichObjective(sn, configs, None, "none", tcfg.batch_size, int(round(tcfg.segment_s * 16000)),
                            n_random=desc["n_random"], seed=desc["seed"])
    params = [p for p in sn.parameters() if p.requires_grad]
    rows = []
    with LoadMeter() as load:
        for step, b in enumerate(batches):
            top = None
            for role, c in zip(("max", "min") + ("rand",) * obj.n_random, obj.sample(step)):
                enh = Enhancer(sn.sub(c))
                est = enh(b["noisy"])
                if role == "max":
                    top = est.detach()
                    continue
                l_se, p = se_loss(est, b["clean"], enh.n_fft, enh.hop)
                l_in, q = se_loss(est, top, enh.n_fft, enh.hop)
                row = {"step": step, "role": role, "config": c.to_dict(),
                       "si_sdr_vs_clean_db": -p["neg_si_sdr"], "si_sdr_vs_largest_db": -q["neg_si_sdr"],
                       "grad_se": grad_norm(l_se, params), "grad_inplace": grad_norm(l_in, params),
                       "grad_se_sdr": grad_norm(neg_si_sdr(est, b["clean"]).mean() / 10, params),
                       "grad_inplace_sdr": grad_norm(neg_si_sdr(est, top).mean() / 10, params),
                       "grad_se_spec": grad_norm(10 * compressed_spectral(est, b["clean"], enh.n_fft, enh.hop),
                                                 params),
                       "grad_inplace_spec": grad_norm(10 * compressed_spectral(est, top, enh.n_fft, enh.hop),
                                                      params)}
                row["ratio"] = row["grad_inplace"] / row["grad_se"]
                rows.append(row)
                print(f"step {step} {role}: SI-SDR vs clean {row['si_sdr_vs_clean_db']:.1f} dB, vs largest "
                      f"{row['si_sdr_vs_largest_db']:.1f} dB; |grad L_in| / |grad L_SE| = {row['ratio']:.2f}",
                      flush=True)
    ratios = [x["ratio"] for x in rows]
    summary = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
               "median_ratio_sdr_part": statistics.median(x["grad_inplace_sdr"] / x["grad_se_sdr"] for x in rows),
               "median_ratio_spec_part": statistics.median(x["grad_inplace_spec"] / x["grad_se_spec"] for x in rows),
               "median_si_sdr_vs_clean_db": statistics.median(x["si_sdr_vs_clean_db"] for x in rows),
               "median_si_sdr_vs_largest_db": statistics.median(x["si_sdr_vs_largest_db"] for x in rows)}
    save(a.name, {"start": str(a.from_git or a.start), "start_epoch": ck["epoch"], "batches": a.batches,
                  "sub_networks": len(rows), "summary": summary, "rows": rows, "threads": a.threads,
                  "load": load.as_dict(), "machine": fingerprint(),
                  "units": "L2 norms of the gradient over the supernet's weights; SI-SDR in dB on the batch"})
    print({k: round(v, 3) for k, v in summary.items()})


if __name__ == "__main__":
    main()
