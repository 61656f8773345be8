"""What can an Ambisonics model reach against the dry direct-path target? Oracle bounds of its output forms.

The Ambisonics target (hwkd/data/synth.py, as in L3DAS23) is the dry speech as it arrives by the direct path;
the input is reverberant and noisy first-order Ambisonics (W, Y, Z, X). The spec's DPDCRN masks the W channel
alone (`mask_mode: reference`): a polar gain <= 1 and a phase rotation per bin. Scored per clip by SI-SDR
against the target, with hwkd's STFT/iSTFT:

- noisy: the W channel as it is;
- reference, polar oracle: the ideal mask S/W, gain clipped at tanh(3), phase kept (the form's ceiling);
- reference, magnitude oracle: the same gain with W's own phase (what a mask that does not correct the phase
  can reach);
- steered beams, no mask: a first-order cardioid (0.5 W + 0.5 u·[X, Y, Z]) and hypercardioid (0.25 W + 0.75
  u·[X, Y, Z], the most directive first-order pattern) steered at the true speech direction u (the manifest's
  azimuth and elevation): a linear combination of the channels, what a `filter-sum` mask can express with
  gains <= 1 (hwkd.models.dpdcrn.apply_mask), here with the direction known;
- hypercardioid, magnitude oracle: the ideal gain on the beam with the beam's phase;
- hypercardioid at an estimated direction (no oracle): steered at the clip's mean active intensity
  Σ_t,f Re{conj(W)·[X, Y, Z]} (the textbook first-order direction estimate; the noise, a point source in the
  same room, and the reflections pull it off the talker), with the estimate's angular error;
- hypercardioid at the speech-weighted direction: the same sum over the bins where the target dominates
  (|S| > |W − S|, an oracle weighting): what `mask_mode: steered` can reach when its speech-presence weights
  are right (hwkd.models.dpdcrn.DPDCRN.steer), with its angular error and the ideal gain on that beam.

Writes results/foa_oracles.json (means with 95 % CIs, and by RT60 band).

    python benchmarks/foa_oracles.py [--split test] [--clips N]
"""

import argparse
import json

import numpy as np
import soundfile as sf
import torch

from hwkd.audio.stft import stft
from hwkd.data.synth import default_dataset
from hwkd.metrics.quality import mean_ci, si_sdr
from hwkd.sysinfo import fingerprint

from _common import ORACLE_GAIN_MAX as GAIN_MAX
from _common import ideal_gain_output, save

KEYS = ("noisy", "reference_polar", "reference_magnitude", "cardioid", "hypercardioid", "hypercardioid_magnitude",
        "hypercardioid_estimated", "direction_error_deg", "hypercardioid_speech_weighted",
        "hypercardioid_speech_weighted_magnitude", "speech_weighted_error_deg")


def rt60_band(rt60: float) -> str:
    lo = int(rt60 * 10) / 10
    return f"{lo:.1f}-{lo + 0.1:.1f} s"


def aim(inten: np.ndarray, weight, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The direction of the active intensity [3 (X, Y, Z), T, F] summed with `weight` per bin, and the
    hypercardioid steered there from the samples x [N, 4] (W, Y, Z, X)."""
    v = (inten * weight).reshape(3, -1).sum(1)
    ue = (v / (np.linalg.norm(v) + 1e-12)).astype(np.float32)
    w, y, z, xx = x.T
    return ue, 0.25 * w + 0.75 * (ue[0] * xx + ue[1] * y + ue[2] * z)


def angle(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(u @ v, -1, 1))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--clips", type=int, default=None, help="the first N clips of the split (default: all)")
    a = ap.parse_args()
    root = default_dataset(4) / a.split
    lines = (root / "manifest.jsonl").read_text().splitlines()[: a.clips]
    rows = []
    for line in lines:
        r = json.loads(line)
        x, _ = sf.read(str(root / r["noisy"]), dtype="float32")
        s, _ = sf.read(str(root / r["clean"]), dtype="float32")
        w, y, z, xx = x.T
        az, el = np.radians(r["room"]["speech_azimuth_deg"]), np.radians(r["room"]["speech_elevation_deg"])
        u = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], np.float32)
        dipole = u[0] * xx + u[1] * y + u[2] * z                    # a figure-of-eight at the speech
        hyper = 0.25 * w + 0.75 * dipole
        sw, sy, sz, sx = stft(torch.from_numpy(x.T.copy())[None])[0].numpy()
        ss = stft(torch.from_numpy(s.copy())[None])[0].numpy()
        speech = np.abs(ss) > np.abs(sw - ss)                       # bins where the target dominates W
        inten = np.stack([np.real(np.conj(sw) * c) for c in (sx, sy, sz)])   # active intensity (X, Y, Z)
        u_est, hyper_est = aim(inten, 1.0, x)
        u_sp, hyper_sp = aim(inten, speech, x)
        rows.append({"id": r["id"], "rt60_s": r["room"]["rt60_s"], "snr_db": r["snr_db"],
                     "noisy": si_sdr(w, s), "reference_polar": si_sdr(ideal_gain_output(w, s, True), s),
                     "reference_magnitude": si_sdr(ideal_gain_output(w, s, False), s),
                     "cardioid": si_sdr(0.5 * w + 0.5 * dipole, s), "hypercardioid": si_sdr(hyper, s),
                     "hypercardioid_magnitude": si_sdr(ideal_gain_output(hyper, s, False), s),
                     "hypercardioid_estimated": si_sdr(hyper_est, s),
                     "direction_error_deg": angle(u, u_est), "hypercardioid_speech_weighted": si_sdr(hyper_sp, s),
                     "hypercardioid_speech_weighted_magnitude": si_sdr(ideal_gain_output(hyper_sp, s, False), s),
                     "speech_weighted_error_deg": angle(u, u_sp)})
    res = {"split": a.split, "utterances": len(rows), "gain_max": GAIN_MAX, "target": "dry direct path",
           "metric": "SI-SDR (dB); direction_error_deg in degrees",
           "direction_error_median_deg": float(np.median([r["direction_error_deg"] for r in rows])),
           "speech_weighted_error_median_deg": float(np.median([r["speech_weighted_error_deg"] for r in rows])),
           "all": {k: mean_ci([r[k] for r in rows]) for k in KEYS}, "by_rt60": {},
           "rows": rows}
    for b in sorted({rt60_band(r["rt60_s"]) for r in rows}):
        sel = [r for r in rows if rt60_band(r["rt60_s"]) == b]
        res["by_rt60"][b] = {"n": len(sel), **{k: float(np.mean([r[k] for r in sel])) for k in KEYS}}
    everything = {"n": len(rows), **{k: res["all"][k]["mean"] for k in KEYS}}
    for name, v in [("all", everything)] + list(res["by_rt60"].items()):
        print(f"{name:>10} n={v['n']:3d}  " + "  ".join(f"{k} {v[k]:6.2f}" for k in KEYS))
    print(f"direction estimate: median error {res['direction_error_median_deg']:.1f} deg, speech-weighted "
          f"{res['speech_weighted_error_median_deg']:.1f} deg")
    res["machine"] = fingerprint()
    save(f"foa_oracles_{a.split}" if a.split != "test" else "foa_oracles", res)


if __name__ == "__main__":
    main()
