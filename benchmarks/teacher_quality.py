"""The embedded teacher on the default test split (mono) and on the out-of-domain split (voices, noise families
and SNRs no other split has; hwkd.data.synth): noisy vs enhanced PESQ-WB, STOI, eSTOI, SI-SDR (and DNSMOS).

Goal (issue: DPDCRN model family): SI-SDR +6 dB and PESQ-WB +0.4 over the noisy input on test.
Writes results/teacher_quality.json ("ood" holds the out-of-domain figures).
Usage: python benchmarks/teacher_quality.py [--ckpt PATH] [--dnsmos] [--splits test,ood]
"""

import argparse

from hwkd.cli import default_dataset
from hwkd.data.datasets import select_pairs
from hwkd.data.layouts import scan
from hwkd.models.checkpoint import load_model
from hwkd.models.teacher import embedded_teacher_path
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.evaluate import evaluate_pairs

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--dnsmos", action="store_true")
    ap.add_argument("--splits", default="test,ood")
    ap.add_argument("--name", default="teacher_quality")
    a = ap.parse_args()
    ckpt = a.ckpt or embedded_teacher_path()
    model, ck = load_model(ckpt)
    data = default_dataset(model.cfg.in_channels)
    s = scan(data, channels=model.cfg.in_channels)
    out = {"machine": fingerprint(), "checkpoint": str(ckpt), "model": ck["model"],
           "params": sum(p.numel() for p in model.parameters()), "train_meta": ck.get("meta"),
           "train_history": ck.get("train", {}).get("history"), "data": str(data),
           "goal": {"si_sdr_db": 6.0, "pesq_wb": 0.4}}
    for split in a.splits.split(","):
        pairs = select_pairs(s, split)
        with LoadMeter() as m:
            res = evaluate_pairs(model, pairs, dnsmos=a.dnsmos)
        gains = {k: res["enhanced"][k]["mean"] - res["noisy"][k]["mean"]
                 for k in res["noisy"] if k != "status_counts" and res["noisy"][k]["mean"] is not None}
        rec = {"split": split, "utterances": len(pairs), "noisy": res["noisy"], "enhanced": res["enhanced"],
               "gain": gains, "load": m.as_dict()}
        if split == "test":       # the test split's figures stay at the top level (README and tests read them)
            out.update(rec, meets_goal=gains["si_sdr_db"] >= 6.0 and gains["pesq_wb"] >= 0.4)
        else:
            out[split] = rec
        print(split, {k: round(v, 3) for k, v in gains.items()})
    save(a.name, out, teacher=ckpt)


if __name__ == "__main__":
    main()
