"""Does a `filter-sum` model beamform? Its per-channel gains, and what the channels other than W add.

For a checkpoint with `mask_mode: filter-sum` (hwkd.models.dpdcrn.apply_mask), on the first N val clips of its
dataset: the energy-weighted mean gain tanh|M_m| of each input channel's mask (weighted by that channel's
|X_m|², per bin), and SI-SDR against the target of the noisy channel 0, of the model's output and of the
channel-0 term of the sum alone (the output without what the other channels contribute). A model that learnt
to beamform has clear gains on the dipoles and an output above its channel-0 term. Writes
results/filter_sum_gains.json (or --name).

    python benchmarks/filter_sum_gains.py CKPT [--clips 10] [--name filter_sum_gains]
"""

import argparse

import numpy as np
import torch

from hwkd.audio.io import read_audio
from hwkd.audio.stft import features, istft, stft
from hwkd.data.datasets import split_pairs
from hwkd.data.synth import default_dataset
from hwkd.metrics.quality import mean_ci, si_sdr
from hwkd.models.checkpoint import load_model
from hwkd.models.dpdcrn import apply_mask
from hwkd.sysinfo import fingerprint

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--name", default="filter_sum_gains")
    a = ap.parse_args()
    net, ck = load_model(a.ckpt)
    cfg = net.cfg
    if cfg.mask_mode != "filter-sum":
        raise SystemExit(f"{a.ckpt} has mask_mode {cfg.mask_mode!r}: this looks at filter-sum models")
    net.eval()
    pairs = split_pairs(default_dataset(cfg.in_channels), "val", channels=cfg.in_channels)[: a.clips]
    gains, rows = [], []
    with torch.no_grad():
        for p in pairs:
            x, _ = read_audio(p.noisy)
            s, _ = read_audio(p.clean)
            xt = torch.from_numpy(x.astype(np.float32))[None]
            spec = stft(xt, cfg.n_fft, cfg.hop)                          # [1, M, T, F]
            mask = net(features(spec))
            m = mask.reshape(1, cfg.in_channels, 2, *mask.shape[2:])
            g = torch.tanh(m.pow(2).sum(2).sqrt())                        # [1, M, T, F]
            w = spec.abs() ** 2
            gains.append((g * w).sum((0, 2, 3)) / w.sum((0, 2, 3)))
            n = x.shape[1]
            full = istft(apply_mask(mask, spec), n, cfg.n_fft, cfg.hop)[0].numpy()
            ref_term = istft(apply_mask(mask[:, :2], spec), n, cfg.n_fft, cfg.hop)[0].numpy()
            rows.append({"id": p.id, "noisy": si_sdr(x[0], s[0]), "output": si_sdr(full, s[0]),
                         "channel0_term": si_sdr(ref_term, s[0])})
    mean_gain = torch.stack(gains).mean(0).tolist()
    res = {"checkpoint": str(a.ckpt), "epoch": ck.get("train", {}).get("epoch"), "clips": len(rows),
           "mean_gain_per_channel": mean_gain,
           **{k: mean_ci([r[k] for r in rows]) for k in ("noisy", "output", "channel0_term")}, "rows": rows,
           "machine": fingerprint()}
    print(f"epoch {res['epoch']}: energy-weighted mean gain per channel {np.round(mean_gain, 3).tolist()}; SI-SDR "
          f"noisy {res['noisy']['mean']:.2f}, output {res['output']['mean']:.2f}, channel-0 term alone "
          f"{res['channel0_term']['mean']:.2f} dB")
    save(a.name, res)


if __name__ == "__main__":
    main()
