"""Where models gain and where they do not: test-split (and out-of-domain) gains by noise family and SNR band.

For the shipped teacher and the time-to-quality students (benchmarks/time_to_quality.py run folders), each
model enhances the split and is scored by hwkd.train.evaluate (PESQ-WB, STOI, eSTOI, SI-SDR), grouped by the
corpus manifest's noise family and 5-dB SNR band. Writes results/by_condition.json.

    python benchmarks/by_condition.py [--runs ~/.cache/hwkd/runs/time_to_quality_w2] [--splits test,ood]
                                      [--ckpt NAME=PATH ...]
"""

import argparse
from pathlib import Path

from hwkd.data.datasets import split_pairs
from hwkd.data.layouts import scan
from hwkd.data.synth import default_dataset
from hwkd.models.checkpoint import load_model
from hwkd.models.teacher import embedded_teacher_path
from hwkd.paths import hwkd_home
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.evaluate import evaluate_pairs

from _common import save

METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr_db")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, default=hwkd_home() / "runs" / "time_to_quality_w2",
                    help="time_to_quality.py's --out: every RUN/*-60min/best.pt is scored beside the teacher")
    ap.add_argument("--budgets", default="60min", help="which runs of the folder (suffixes, comma-separated)")
    ap.add_argument("--ckpt", action="append", default=[], metavar="NAME=PATH",
                    help="another checkpoint to score beside them (repeatable), e.g. a teacher in training")
    ap.add_argument("--splits", default="test,ood")
    ap.add_argument("--name", default="by_condition")
    a = ap.parse_args()
    models = {"teacher (shipped)": embedded_teacher_path()}
    for suffix in a.budgets.split(","):
        for run in sorted(a.runs.glob(f"*-{suffix}")):
            if (run / "best.pt").is_file() and (run / "done").is_file():
                models[run.name] = run / "best.pt"
    for spec in a.ckpt:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--ckpt {spec}: give NAME=PATH of an existing checkpoint")
        models[name] = Path(path)
    data = default_dataset(1)
    sc = scan(data, channels=1)
    out = {"machine": fingerprint(), "data": str(data), "models": {k: str(v) for k, v in models.items()},
           "results": {}}
    for split in a.splits.split(","):
        pairs = split_pairs(sc, split)
        for name, ckpt in models.items():
            model, _ = load_model(ckpt)
            with LoadMeter() as load:
                ev = evaluate_pairs(model, pairs, progress=False)
            rec = {"utterances": len(pairs), "gain": {m: ev["enhanced"][m]["mean"] - ev["noisy"][m]["mean"]
                                                      for m in METRICS},
                   "by_condition": ev["by_condition"], "load": load.as_dict()}
            out["results"].setdefault(split, {})[name] = rec
            print(f"{split} {name}: SI-SDR {rec['gain']['si_sdr_db']:+.2f} dB; by noise: "
                  + ", ".join(f"{k} {v['si_sdr_db']['gain']:+.1f}" for k, v in ev["by_condition"]["noise"].items()))
            save(a.name, out, teacher=True)


if __name__ == "__main__":
    main()
