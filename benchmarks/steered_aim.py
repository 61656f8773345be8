"""Where does a `steered` Ambisonics model aim, and what do its beam and its mask each add?

For a checkpoint with `mask_mode: steered` (hwkd.models.dpdcrn.DPDCRN.steer), on the first N clips of a split
of its dataset: the direction its beam points at (the beam weights on Y, Z, X, normalised; for a causal model
the last frame's) against the talker's direction in the manifest, the beam's directivity (the length of those
weights over 1 − HYPERCARDIOID: 1 = a full hypercardioid, 0 = omni), and SI-SDR against the dry direct-path
target of the noisy W, the beam alone (no mask), the model's output, and the same hypercardioid steered at the
true direction (no mask). A model that aims well has a small angle and a beam near the true-direction one; its
mask adds the rest. Writes results/steered_aim.json (or --name).

    python benchmarks/steered_aim.py CKPT [--split val] [--clips 20] [--name steered_aim]
"""

import argparse
import json

import numpy as np
import torch

from hwkd.audio.io import read_audio
from hwkd.audio.stft import features, istft, stft
from hwkd.data.synth import default_dataset
from hwkd.metrics.quality import mean_ci, si_sdr
from hwkd.models.checkpoint import load_model
from hwkd.models.dpdcrn import HYPERCARDIOID, apply_mask
from hwkd.sysinfo import fingerprint

from _common import save

KEYS = ("noisy", "beam", "output", "true_direction_beam", "aim_error_deg", "directivity")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--name", default="steered_aim")
    a = ap.parse_args()
    net, ck = load_model(a.ckpt)
    cfg = net.cfg
    if cfg.mask_mode != "steered":
        raise SystemExit(f"{a.ckpt} has mask_mode {cfg.mask_mode!r}: this looks at steered models")
    net.eval()
    root = default_dataset(cfg.in_channels) / a.split
    lines = (root / "manifest.jsonl").read_text().splitlines()[: a.clips]
    rows = []
    with torch.no_grad():
        for line in lines:
            r = json.loads(line)
            x, _ = read_audio(root / r["noisy"])
            s, _ = read_audio(root / r["clean"])
            s = s[0]
            spec = stft(torch.from_numpy(x.astype(np.float32))[None], cfg.n_fft, cfg.hop)   # [1, 4, T, F]
            mask = net(features(spec))
            n = x.shape[1]
            weights = mask[0, 2:, -1, 0].numpy()                         # W, Y, Z, X (the last frame's)
            beam = (weights[:, None] * x).sum(0)
            out = istft(apply_mask(mask, spec), n, cfg.n_fft, cfg.hop)[0].numpy()
            az, el = np.radians(r["room"]["speech_azimuth_deg"]), np.radians(r["room"]["speech_elevation_deg"])
            u = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])       # Y, Z, X
            aim = weights[1:] / (np.linalg.norm(weights[1:]) + 1e-12)
            true_beam = HYPERCARDIOID * x[0] + (1 - HYPERCARDIOID) * (u[:, None] * x[1:]).sum(0)
            rows.append({"id": r["id"], "noisy": si_sdr(x[0], s), "beam": si_sdr(beam, s), "output": si_sdr(out, s),
                         "true_direction_beam": si_sdr(true_beam, s),
                         "aim_error_deg": float(np.degrees(np.arccos(np.clip(u @ aim, -1, 1)))),
                         "directivity": float(np.linalg.norm(weights[1:]) / (1 - HYPERCARDIOID))})
    res = {"checkpoint": str(a.ckpt), "epoch": ck.get("train", {}).get("epoch"), "split": a.split, "clips": len(rows),
           "target": "dry direct path", "metric": "SI-SDR (dB); aim_error_deg in degrees",
           "aim_error_median_deg": float(np.median([r["aim_error_deg"] for r in rows])),
           **{k: mean_ci([r[k] for r in rows]) for k in KEYS}, "rows": rows, "machine": fingerprint()}
    print(f"epoch {res['epoch']}, {a.split} ({len(rows)} clips): aim error median {res['aim_error_median_deg']:.1f} "
          f"deg, directivity {res['directivity']['mean']:.2f}; SI-SDR noisy W {res['noisy']['mean']:.2f}, beam alone "
          f"{res['beam']['mean']:.2f}, output {res['output']['mean']:.2f}, beam at the true direction "
          f"{res['true_direction_beam']['mean']:.2f} dB")
    save(a.name, res)


if __name__ == "__main__":
    main()
