"""Inherited quality by dense depth: does a sub-network of every depth inherit weights as good as its neighbours'?

For a trained supernet, the sub-networks C x D (channels x dense depth, the rest fixed by --fixed) are scored on
the val split as inherited (no training) and after --finetune steps of the one fine-tune recipe (the search's
promotion and supernet_fidelity.py's: I²SRF-TFCKD from the embedded teacher, half the peak lr). A depth whose
inherited score sits below both neighbours' while its fine-tuned one does not is a weight-sharing artefact the
search's rung 0 (inherited scores) sees and its promotions repair. Writes results/NAME.json.

    python benchmarks/supernet_depth.py --supernet RUN [--channels 24,32,40] [--depths 1,2,3,4]
        [--fixed layers=1,heads=1,gru_hidden=24,intra_bidirectional=false] [--finetune 0] [--threads 2]
"""

import argparse
from dataclasses import replace
from pathlib import Path

from hwkd.data.datasets import SpeechPairs
from hwkd.data.synth import default_dataset
from hwkd.models.checkpoint import load_model, read_checkpoint
from hwkd.models.teacher import embedded_teacher_path
from hwkd.paths import hwkd_home
from hwkd.search.run import candidate_key
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.recipe import KDSpec, train_model
from hwkd.train.supernet import load_supernet
from hwkd.train.trainer import TrainConfig

from _common import inherited_score, save, val_score


def parse_fixed(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        out[k] = {"true": True, "false": False}.get(v.lower(), None)
        if out[k] is None:
            out[k] = int(v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", type=Path, required=True)
    ap.add_argument("--channels", default="24,32,40")
    ap.add_argument("--depths", default="1,2,3,4")
    ap.add_argument("--fixed", default="layers=1,heads=1,gru_hidden=24,intra_bidirectional=false")
    ap.add_argument("--finetune", type=int, default=0, help="fine-tune steps after inheriting (0: inherited only)")
    ap.add_argument("--lr", type=float, default=2e-3, help="the peak lr; the fine-tune uses half")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=hwkd_home() / "runs" / "supernet_depth")
    ap.add_argument("--name", default="supernet_depth")
    a = ap.parse_args()
    sn, configs = load_supernet(a.supernet)
    fixed = parse_fixed(a.fixed)
    by_key = {candidate_key(c): c for c in configs}
    teacher = load_model(embedded_teacher_path())[0] if a.finetune else None
    val = SpeechPairs(default_dataset(1), split="val", mode="utterance", channels=1)
    rows = []
    with LoadMeter() as load:
        for ch in [int(x) for x in a.channels.split(",")]:
            for d in [int(x) for x in a.depths.split(",")]:
                cfg = replace(configs[0], channels=ch, depth=d, **fixed)
                key = candidate_key(cfg)
                if key not in by_key:
                    raise SystemExit(f"C{ch} D{d} with {a.fixed} is not a sub-network the supernet was trained on")
                init = sn.extract(cfg).state_dict()
                row = {"channels": ch, "depth": d, "key": key, "inherited": inherited_score(sn, cfg, val)}
                if a.finetune:
                    run = a.out / key
                    tcfg = TrainConfig(epochs=1, batch_size=8, lr=a.lr * 0.5, segment_s=2.0, threads=a.threads,
                                       val_pesq_clips=5, ckpt_every=25, seed=0)
                    train_model(cfg, run, tcfg, kd=KDSpec("i2srf-tfckd", teacher), init=init, progress=False,
                                steps=a.finetune, meta={"command": f"benchmarks/supernet_depth.py {key}"})
                    row["finetuned"] = val_score(run)
                rows.append(row)
                print(f"C{ch} D{d}: inherited {row['inherited']['val_si_sdr_db']:.2f} dB"
                      + (f", fine-tuned {row['finetuned']['val_si_sdr_db']:.2f} dB" if a.finetune else ""), flush=True)
    best = read_checkpoint(a.supernet / "best.pt")["train"]["history"][-1]
    save(a.name, {"machine": fingerprint(), "supernet": str(a.supernet), "supernet_epoch": best["epoch"],
                  "supernet_steps": best["steps"], "fixed": fixed, "val_clips": len(val),
                  "val_pesq_clips": 5, "settings": {k: str(v) for k, v in vars(a).items()}, "rows": rows,
                  "load": load.as_dict()}, teacher=True if a.finetune else None)


if __name__ == "__main__":
    main()
