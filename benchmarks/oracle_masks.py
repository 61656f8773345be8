"""Is hwkd's mask family what caps a model's output at high input SNR? Oracle masks on a split, by SNR band.

DPDCRN applies a polar mask to the noisy spectrum: gain tanh(|M|) <= 1 and a phase rotation
(hwkd.models.dpdcrn.apply_mask). The oracle of that family is the ideal mask S/X with its gain clipped at
tanh(3) = 0.995 and its phase kept; the magnitude-only oracle keeps the noisy phase. Each is reconstructed with
hwkd's STFT/iSTFT (square-root Hann, n_fft 512, hop 256) and scored by SI-SDR against the clean target, per
5-dB band of the corpus manifest's SNR. Writes results/oracle_masks.json.

    python benchmarks/oracle_masks.py [--split test]
"""

import argparse
import json

import numpy as np
import soundfile as sf

from hwkd.data.synth import default_dataset
from hwkd.metrics.quality import si_sdr
from hwkd.sysinfo import fingerprint

from _common import ORACLE_GAIN_MAX as GAIN_MAX
from _common import ideal_gain_output, save


def band(snr: float) -> str:
    return "< 0 dB" if snr < 0 else f"{int(snr // 5) * 5} to {int(snr // 5) * 5 + 5} dB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    a = ap.parse_args()
    root = default_dataset(1) / a.split
    rows = []
    for line in (root / "manifest.jsonl").read_text().splitlines():
        r = json.loads(line)
        x, _ = sf.read(str(root / r["noisy"]), dtype="float32")
        s, _ = sf.read(str(root / r["clean"]), dtype="float32")
        polar, mag = ideal_gain_output(x, s, True), ideal_gain_output(x, s, False)
        rows.append({"id": r["id"], "snr_db": r["snr_db"], "noise_kind": r["noise_kind"],
                     "noisy": si_sdr(x, s), "oracle_polar": si_sdr(polar, s), "oracle_magnitude": si_sdr(mag, s)})
    res = {"split": a.split, "utterances": len(rows), "gain_max": GAIN_MAX, "by_snr_band": {}}
    order = sorted({band(r["snr_db"]) for r in rows}, key=lambda b: -99 if b.startswith("<") else int(b.split()[0]))
    for b in order + ["all"]:
        sel = [r for r in rows if b == "all" or band(r["snr_db"]) == b]
        res["by_snr_band"][b] = {"n": len(sel), **{k: float(np.mean([r[k] for r in sel]))
                                                   for k in ("noisy", "oracle_polar", "oracle_magnitude")}}
        v = res["by_snr_band"][b]
        print(f"{b:>12} n={v['n']:3d}  noisy {v['noisy']:6.2f}  oracle polar {v['oracle_polar']:6.2f}  "
              f"magnitude-only {v['oracle_magnitude']:6.2f} dB SI-SDR")
    res["machine"] = fingerprint()
    save("oracle_masks", res)


if __name__ == "__main__":
    main()
