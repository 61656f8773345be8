"""The embedded teacher on the default test split (mono) and on the out-of-domain split (voices, noise families
and SNRs no other split has; hwkd.data.synth): noisy vs enhanced PESQ-WB, STOI, eSTOI, SI-SDR (and DNSMOS).

Goals (issue "Teachers that generalise"), over the noisy input on the test split: the mono teacher SI-SDR
+10 dB, PESQ-WB +1.0 and eSTOI +0.10; the Ambisonics teacher SI-SDR +6 dB (over the noisy W channel, against
the dry direct-path target). Out of domain it must gain too (SI-SDR and PESQ-WB above zero, `gains_ood`).
Gains are means over the utterances with a paired 95 % CI (Student t over the per-utterance differences).
Writes results/teacher_quality.json ("ood" holds the out-of-domain figures).
With --dnsmos the clean references are scored too (`clean_dnsmos`): on this corpus's synthetic voices the
perceptual scores have a ceiling well below a studio recording's, and a gain reads against it.
Usage: python benchmarks/teacher_quality.py [--ckpt PATH] [--dnsmos] [--splits test,ood] [--limit N]
"""

import argparse

from hwkd.cli import default_dataset
from hwkd.data.datasets import select_pairs
from hwkd.data.layouts import scan
from hwkd.metrics.quality import DNSMOS_METRICS, load_channel_and_reference, mean_ci, score_pairs, summarize
from hwkd.models.checkpoint import load_model
from hwkd.models.teacher import embedded_teacher_path
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.evaluate import evaluate_pairs

from _common import save

GOALS = {1: {"si_sdr_db": 10.0, "pesq_wb": 1.0, "estoi": 0.10}, 4: {"si_sdr_db": 6.0}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--dnsmos", action="store_true")
    ap.add_argument("--splits", default="test,ood")
    ap.add_argument("--name", default="teacher_quality")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances of each split (a check)")
    a = ap.parse_args()
    ckpt = a.ckpt or embedded_teacher_path()
    model, ck = load_model(ckpt)
    data = default_dataset(model.cfg.in_channels)
    s = scan(data, channels=model.cfg.in_channels)
    out = {"machine": fingerprint(), "checkpoint": str(ckpt), "model": ck["model"],
           "params": sum(p.numel() for p in model.parameters()), "train_meta": ck.get("meta"),
           "train_history": ck.get("train", {}).get("history"), "data": str(data),
           "goal": GOALS[model.cfg.in_channels]}
    for split in a.splits.split(","):
        pairs = select_pairs(s, split)[:a.limit]
        with LoadMeter() as m:
            res = evaluate_pairs(model, pairs, dnsmos=a.dnsmos)
            if a.dnsmos:        # the clean references' own DNSMOS: the ceiling of the perceptual scores here
                clean = score_pairs([(p.clean, p.clean, p.id) for p in pairs], load_channel_and_reference,
                                    dnsmos=True, desc="metrics clean")
        gains = {k: res["enhanced"][k]["mean"] - res["noisy"][k]["mean"]
                 for k in res["noisy"] if k != "status_counts" and res["noisy"][k]["mean"] is not None}
        paired = {k: mean_ci([e[k] - n[k] for n, e in zip(res["rows"]["noisy"], res["rows"]["enhanced"])
                              if n.get(k) is not None and e.get(k) is not None])["ci95"] for k in gains}
        rec = {"split": split, "utterances": len(pairs), "noisy": res["noisy"], "enhanced": res["enhanced"],
               "gain": gains, "gain_ci95": paired, "load": m.as_dict()}
        if a.dnsmos:
            rec["clean_dnsmos"] = summarize(clean, DNSMOS_METRICS)
        if split == "test":       # the test split's figures stay at the top level (README and tests read them)
            out.update(rec, meets_goal=all(gains[k] >= v for k, v in out["goal"].items()))
        else:
            out[split] = rec
            if split == "ood":
                out["gains_ood"] = gains["si_sdr_db"] > 0 and gains["pesq_wb"] > 0
        print(split, {k: round(v, 3) for k, v in gains.items()})
    save(a.name, out, teacher=ckpt)


if __name__ == "__main__":
    main()
