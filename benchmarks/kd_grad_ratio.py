"""How hard each KD term pulls: λ·‖∇θ L_KD‖ / ‖∇θ L_SE‖ on the student's parameters θ, at initialisation.

kd-medium student (seeded, as a run starts), the embedded teacher, real training batches (batch 8 of 2-s
segments of the embedded corpus). For every scheme:
- `fixed_0.1`: the ratio at λ = 0.1 (hwkd's old fixed default);
- `balanced`: λ from the balancing rule (hwkd.train.objective, KD_GRAD_RATIO) measured on the run's first
  --balance batches, and the ratio it gives on the *next* --held-out batches (so the figure is not the
  rule's own target restated).

Written against the distiller interface only (create_distiller, se_loss), so the same script measures an older
checkout: `PYTHONPATH=OLD_CHECKOUT python benchmarks/kd_grad_ratio.py --name kd_grad_ratio_before` (the old
code has no balancing rule; its row is the fixed λ alone).

    python benchmarks/kd_grad_ratio.py [--student kd-medium] [--balance 2] [--held-out 2]
"""

import argparse
import math

import torch

from hwkd.data.datasets import SpeechPairs
from hwkd.data.synth import default_dataset
from hwkd.kd.base import create_distiller, schemes
from hwkd.models import create_model
from hwkd.models.checkpoint import load_model
from hwkd.models.enhancer import Enhancer
from hwkd.models.teacher import embedded_teacher_path
from hwkd.sysinfo import fingerprint
from hwkd.train.losses import se_loss

from _common import save

# the KD comparison's kd-medium, spelled out for checkouts older than the preset
SIZES = {"kd-medium": dict(channels=24, layers=1, depth=3, heads=2, gru_hidden=24)}


def batches(data, n_batches, batch, segment_s, seed=0):
    try:
        from hwkd.data.mixing import OnTheFlyMix  # what a run trains on now
        ds = OnTheFlyMix(data, segment_s=segment_s, seed=seed)
        how = "on-the-fly mixing"
    except ImportError:                                 # an older checkout: the static clips
        ds = SpeechPairs(data, split="train", mode="segment", segment_s=segment_s, seed=seed)
        how = "static clips"
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=g).tolist()
    out = []
    for k in range(n_batches):
        items = [ds[i] for i in order[k * batch:(k + 1) * batch]]
        out.append({"noisy": torch.stack([it["noisy"] for it in items]),
                    "clean": torch.stack([it["clean"] for it in items])})
    return out, how


def norms(student, teacher, distiller, batch):
    params = [p for p in student.parameters() if p.requires_grad]
    est, s_taps = student(batch["noisy"], return_taps=True)
    with torch.no_grad():
        _, t_taps = teacher(batch["noisy"], return_taps=True)
    l_se, _ = se_loss(est, batch["clean"], student.n_fft, student.hop)
    l_kd, _ = distiller(s_taps, t_taps)

    def gnorm(loss):
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return math.sqrt(sum(float(g.pow(2).sum()) for g in gs if g is not None))
    return gnorm(l_se), gnorm(l_kd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="kd-medium")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--balance", type=int, default=2)
    ap.add_argument("--held-out", type=int, default=2)
    ap.add_argument("--schemes", default=",".join(sorted(s for s, c in schemes().items() if c.uses_teacher)))
    ap.add_argument("--name", default="kd_grad_ratio")
    a = ap.parse_args()
    try:
        from hwkd.train.objective import KD_GRAD_RATIO
    except ImportError:
        KD_GRAD_RATIO = None
    teacher_net, _ = load_model(embedded_teacher_path())
    teacher = Enhancer(teacher_net.eval())
    data = default_dataset(1)
    bs, how = batches(data, a.balance + a.held_out, a.batch, a.segment_s)
    n = int(a.segment_s * 16000)
    res = {"student": a.student, "teacher": "embedded", "batch": a.batch, "segment_s": a.segment_s,
           "data": how, "target_ratio": KD_GRAD_RATIO, "balance_batches": a.balance, "held_out_batches": a.held_out,
           "schemes": {}}
    for scheme in a.schemes.split(","):
        torch.manual_seed(0)
        student = Enhancer(create_model(SIZES.get(a.student, a.student)))
        x = torch.zeros(a.batch, 2, -(-n // student.hop), 257)
        with torch.no_grad():
            _, st = student.net(x, return_taps=True)
            _, tt = teacher_net(x, return_taps=True)
        distiller = create_distiller(scheme, st, tt)
        ms = [norms(student, teacher, distiller, b) for b in bs]
        se_b = sum(m[0] for m in ms[:a.balance]) / a.balance
        kd_b = sum(m[1] for m in ms[:a.balance]) / a.balance
        se_h = sum(m[0] for m in ms[a.balance:]) / a.held_out
        kd_h = sum(m[1] for m in ms[a.balance:]) / a.held_out
        row = {"grad_norm_se": se_h, "grad_norm_kd": kd_h, "fixed_0.1": 0.1 * kd_h / se_h}
        if KD_GRAD_RATIO is not None:
            lam = KD_GRAD_RATIO * se_b / kd_b
            row.update({"balanced_lam": lam, "balanced": lam * kd_h / se_h})
        res["schemes"][scheme] = row
        print(f"{scheme:<20} λ=0.1: {row['fixed_0.1']:.3g}" +
              (f"   balanced λ {row['balanced_lam']:.4g}: {row['balanced']:.3f} on held-out batches"
               if "balanced" in row else ""), flush=True)
    res["machine"] = fingerprint()
    save(a.name, res, teacher=True)


if __name__ == "__main__":
    main()
