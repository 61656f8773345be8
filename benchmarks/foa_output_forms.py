"""Does an Ambisonics DPDCRN learn more with a mask per channel (filter-sum) and spatial features than with the
spec's one mask on W? And does the on-the-fly mixing show it enough directions? An A/B of training curves.

Trains the comparison's Ambisonics student (kd-medium-foa) for the same steps and data with each variant:
`reference` (the spec's form), `filter-sum` (`--mask-mode filter-sum --spatial-features`), `steered` (`--mask-mode
steered`: the mask on a hypercardioid the network steers) and `steered-spatial` (with the spatial features),
under on-the-fly mixing version 2 (a pool of 128 rooms: 128 speech directions) and 3 (each mixture's field turned
about the vertical axis), two runs at a time (1 worker, 1 thread each). Runs of variants not asked for this time
are kept from the results file (each run records its date). Records each run's learning curve (train
negative SI-SDR, val SI-SDR on the first 40 val clips against the dry direct path, per 50 steps) and the gap
between them. Writes results/foa_output_forms.json.

    python benchmarks/foa_output_forms.py [--epochs 24] [--steps-per-epoch 50] [--versions 2,3]
        [--variants reference,filter-sum] [--work DIR]
    python benchmarks/foa_output_forms.py --collect NAME=RUN_DIR ...    # record runs already made this way
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from hwkd.sysinfo import fingerprint

from _common import save

VARIANTS = {"reference": [], "filter-sum": ["--mask-mode", "filter-sum", "--spatial-features"],
            "steered": ["--mask-mode", "steered"], "steered-spatial": ["--mask-mode", "steered", "--spatial-features"]}


def command(variant: str, version: int, out: Path, epochs: int, steps: int) -> list[str]:
    return [sys.executable, "-m", "hwkd", "train", "--model", "kd-medium-foa", *VARIANTS[variant],
            "--epochs", str(epochs), "--max-steps-per-epoch", str(steps), "--batch-size", "8", "--segment-s", "2",
            "--lr", "2e-3", "--mixing", "on", "--mixing-version", str(version), "--val-pesq-clips", "0",
            "--workers", "1", "--threads", "1", "--out", str(out)]


def curve(run: Path) -> dict:
    hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    meta = torch.load(run / "last.pt", weights_only=True, map_location="cpu")["meta"]
    rows = [{"steps": h["steps"], "train_si_sdr_db": -h["train_neg_si_sdr"], "val_si_sdr_db": h["val_si_sdr_db"]}
            for h in hist]
    last = rows[-3:]
    return {"command": meta.get("command"), "mixing_version": meta.get("mixing_version"), "curve": rows,
            "last3_steps": [r["steps"] for r in last],
            "last3_val_mean_db": sum(r["val_si_sdr_db"] for r in last) / len(last),
            "last3_train_mean_db": sum(r["train_si_sdr_db"] for r in last) / len(last),
            "val_range_last_half_db": [min(r["val_si_sdr_db"] for r in rows[len(rows) // 2:]),
                                       max(r["val_si_sdr_db"] for r in rows[len(rows) // 2:])]}


def noisy_val(clips: int = 40) -> float:
    """The noisy W channel's SI-SDR on the val clips the runs validate on (the first `clips`)."""
    import numpy as np

    from hwkd.data.datasets import split_pairs
    from hwkd.data.synth import default_dataset
    from hwkd.metrics.quality import load_channel_and_reference, si_sdr
    pairs = split_pairs(default_dataset(4), "val", channels=4)[:clips]
    return float(np.mean([si_sdr(*load_channel_and_reference((p.noisy, 0), p.clean)[:2]) for p in pairs]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--versions", default="2,3")
    ap.add_argument("--variants", default="reference,filter-sum", help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hwkd-foa-forms"))
    ap.add_argument("--collect", nargs="*", default=None, help="NAME=RUN_DIR of runs already made this way")
    a = ap.parse_args()
    unknown = set(a.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    runs = {}
    if a.collect:
        runs = {k: Path(v) for k, v in (x.split("=", 1) for x in a.collect)}
    else:
        for v in map(int, a.versions.split(",")):
            procs = {}
            for variant in a.variants.split(","):          # the variants of one version side by side
                out = a.work / f"v{v}-{variant}"
                cmd = command(variant, v, out, a.epochs, a.steps_per_epoch)
                procs[f"v{v}-{variant}"] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                                             stderr=subprocess.DEVNULL), out, cmd)
            for name, (p, out, cmd) in procs.items():
                if p.wait() != 0:
                    raise SystemExit(f"{name} failed; run it alone to see why: {' '.join(cmd)}")
                runs[name] = out
    import datetime
    today = datetime.date.today().isoformat()
    old = Path(__file__).parent / "results" / "foa_output_forms.json"
    before = json.loads(old.read_text()) if old.is_file() else {"runs": {}}
    kept = {k: {"date": before["machine"]["date"], **v} for k, v in before["runs"].items()}
    res = {"noisy_val_si_sdr_db": noisy_val(),
           "runs": {**kept, **{k: {"date": today, **curve(p)} for k, p in runs.items()}}}
    print(f"noisy W on the same val clips: {res['noisy_val_si_sdr_db']:.2f} dB")
    for k, r in res["runs"].items():
        print(f"{k:>16}: steps {r['last3_steps']}: val {r['last3_val_mean_db']:6.2f} dB, train "
              f"{r['last3_train_mean_db']:6.2f} dB (val over the second half {r['val_range_last_half_db']})")
    res["machine"] = fingerprint()
    save("foa_output_forms", res)


if __name__ == "__main__":
    main()
