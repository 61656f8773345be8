"""The two terms of hwkd's speech-enhancement loss: what each does to the gradient, and to training.

L_SE = w_sdr · (−SI-SDR) + w_spec · [0.7 · MSE(|S|^0.3, |Ŝ|^0.3) + 0.3 · MSE(S^0.3, Ŝ^0.3)], w = (0.1, 10)
(hwkd/train/losses.py).

  python benchmarks/loss_terms.py grads [--ckpt RUN/best.pt ...]
      per-term gradient norms on the student's parameters and the cosine between the two gradients, on real
      on-the-fly training batches, for the time-to-quality student at its identity start and for each
      checkpoint given; results/loss_terms_grads.json.
  python benchmarks/loss_terms.py train --variant sdr|spec|both [time_to_quality.py options]
      time_to_quality.py with the loss's weights replaced for the plain-SE objective (w_sdr, w_spec) =
      (0.1, 0) | (0, 10) | (0.1, 10) — an ablation of the recipe's loss, done by patching the trainer's
      se_loss in this process, so run it with --workers 1; results/loss_terms_VARIANT.json (the benchmark's
      --name default) beside time_to_quality's own.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VARIANTS = {"both": (0.1, 10.0), "sdr": (0.1, 0.0), "spec": (0.0, 10.0)}


def grads(a) -> None:
    from hwkd.data import MIX_VERSION
    from hwkd.data.synth import default_dataset
    from hwkd.models.checkpoint import load_model
    from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
    from hwkd.models.enhancer import Enhancer
    from hwkd.sysinfo import fingerprint
    from hwkd.train.losses import compressed_spectral, neg_si_sdr
    from hwkd.train.recipe import training_set
    from hwkd.train.trainer import stack_batch
    sys.path.insert(0, str(HERE))
    from time_to_quality import STUDENT

    torch.set_num_threads(a.threads)
    data = default_dataset(1)
    ds = training_set(data, "train", 2.0, 1, 0, mix_version=MIX_VERSION)
    ds.set_epoch(a.epoch)
    batches = [stack_batch([ds[i] for i in range(k * 8, (k + 1) * 8)], "cpu") for k in range(a.batches)]
    w_sdr, w_spec = VARIANTS["both"]

    def measure(net) -> list[dict]:
        enh, params = Enhancer(net), [p for p in net.parameters() if p.requires_grad]
        rows = []
        for b in batches:
            est = enh(b["noisy"])
            l_sdr = w_sdr * neg_si_sdr(est, b["clean"]).mean()
            l_spec = w_spec * compressed_spectral(est, b["clean"])
            g1 = torch.autograd.grad(l_sdr, params, retain_graph=True)
            g2 = torch.autograd.grad(l_spec, params)
            n1 = torch.sqrt(sum((g * g).sum() for g in g1))
            n2 = torch.sqrt(sum((g * g).sum() for g in g2))
            cos = sum((x * y).sum() for x, y in zip(g1, g2)) / (n1 * n2)
            rows.append({"sdr_term": float(l_sdr.detach()), "spec_term": float(l_spec.detach()),
                         "grad_norm_sdr": float(n1), "grad_norm_spec": float(n2), "cosine": float(cos)})
        return rows

    torch.manual_seed(0)
    net = DPDCRN(DPDCRNConfig(**STUDENT))
    net.identity_start()
    out = {"what": "per-term gradient norms of L_SE on the student's parameters, and the cosine between the "
                   "two terms' gradients, on on-the-fly training batches of 8 x 2 s",
           "weights": {"sdr": w_sdr, "spec": w_spec}, "mixing_version": MIX_VERSION, "epoch": a.epoch,
           "machine": fingerprint(), "models": {"identity start (seed 0)": measure(net)}}
    for ck in a.ckpt:
        net, _ = load_model(ck)
        out["models"][str(ck)] = measure(net)
    for name, rows in out["models"].items():
        print(name)
        for r in rows:
            print("  sdr {sdr_term:+.3f} spec {spec_term:.3f}  |g_sdr| {grad_norm_sdr:.3g}  |g_spec| "
                  "{grad_norm_spec:.3g}  cos {cosine:+.2f}".format(**r))
    (RESULTS / "loss_terms_grads.json").write_text(json.dumps(out, indent=1))


def train(variant: str, rest: list[str]) -> None:
    import hwkd.train.trainer as trainer
    from hwkd.train.losses import compressed_spectral, neg_si_sdr
    w_sdr, w_spec = VARIANTS[variant]

    def se_loss(est, ref, n_fft=512, hop=256):
        sdr = neg_si_sdr(est, ref).mean()
        spec = compressed_spectral(est, ref, n_fft, hop)
        return w_sdr * sdr + w_spec * spec, {"neg_si_sdr": float(sdr.detach()), "spec": float(spec.detach())}

    trainer.se_loss = se_loss                         # SEObjective looks it up in the trainer's module
    if "--name" not in rest:
        rest += ["--name", f"loss_terms_{variant}"]
    rest += ["--workers", "1"]
    sys.argv = [str(HERE / "time_to_quality.py"), "--schemes", "none", *rest]
    sys.path.insert(0, str(HERE))
    runpy.run_path(str(HERE / "time_to_quality.py"), run_name="__main__")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grads")
    g.add_argument("--ckpt", type=Path, nargs="*", default=[])
    g.add_argument("--batches", type=int, default=4)
    g.add_argument("--epoch", type=int, default=3)
    g.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("train")
    t.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    t.add_argument("--workers", type=int, default=1, choices=[1],
                   help="1: the loss is patched in this process only (spawned workers would train with the recipe's)")
    a, rest = ap.parse_known_args()
    if a.cmd == "grads":
        if rest:
            ap.error(f"unknown options {rest}")
        grads(a)
    else:
        if any(r.startswith("--workers") for r in rest):
            ap.error("--workers must be 1: the loss is patched in this process only")
        train(a.variant, rest)


if __name__ == "__main__":
    main()
