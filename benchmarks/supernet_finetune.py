"""Does the search's short fine-tune improve a sub-network over its inherited weights, and at what learning rate?

For sub-networks of results/supernet_fidelity.json (every --every-th of its 8, stratified by MACs), scores the
supernet's weights as inherited (no training), then fine-tunes them --steps steps with I²SRF-TFCKD from the
embedded teacher (the search's promotion recipe: its batch and segment, a fresh optimizer with the short warm-up
and cosine decay) at each peak learning rate of --lrs, and scores the result on the same val clips. A fine-tune
that ends below the inherited score is a learning rate too hot for weights that the supernet's own schedule had
already cooled (its last epochs ran near 5 % of its 2e-3 peak). Writes results/NAME.json.

    python benchmarks/supernet_finetune.py --supernet RUN [--lrs 1.5e-3,3e-4,1e-4] [--steps 20] [--every 2]
"""

import argparse
import json
from pathlib import Path

from hwkd.data.datasets import SpeechPairs
from hwkd.data.synth import default_dataset
from hwkd.models.checkpoint import load_model, read_checkpoint
from hwkd.models.dpdcrn import DPDCRNConfig
from hwkd.models.teacher import embedded_teacher_path
from hwkd.paths import hwkd_home
from hwkd.search.config import SearchConfig
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.recipe import KDSpec, train_model
from hwkd.train.supernet import load_supernet
from hwkd.train.trainer import TrainConfig

from _common import RESULTS, inherited_score, save, val_score


def main():
    sc = SearchConfig()
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", type=Path, required=True)
    ap.add_argument("--lrs", default="1.5e-3,3e-4,1e-4", help="peak learning rates to compare (1.5e-3: the "
                                                               "search's promotion before 2026-12-02)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--kd", default="i2srf-tfckd", help="the fine-tune's KD scheme (none: L_SE alone)")
    ap.add_argument("--every", type=int, default=2, help="every N-th sub-network of the fidelity benchmark's")
    ap.add_argument("--first", type=int, default=None, help="only the first N of those")
    ap.add_argument("--batch", type=int, default=sc.batch_size)
    ap.add_argument("--segment-s", type=float, default=sc.segment_s)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=hwkd_home() / "runs" / "supernet_finetune")
    ap.add_argument("--name", default="supernet_finetune")
    a = ap.parse_args()
    if a.every < 1 or a.steps < 1 or (a.first is not None and a.first < 1):
        raise SystemExit("--every, --steps and --first must be 1 or more")
    sn, _ = load_supernet(a.supernet)
    state = read_checkpoint(a.supernet / "best.pt")["train"]["history"][-1]
    teacher = load_model(embedded_teacher_path())[0] if a.kd != "none" else None
    val = SpeechPairs(default_dataset(1), split="val", mode="utterance", channels=1)
    picks = json.loads((RESULTS / "supernet_fidelity.json").read_text())["rows"][::a.every][:a.first]
    lrs = [float(x) for x in a.lrs.split(",")]
    rows = []
    with LoadMeter() as load:
        for p in picks:
            cfg = DPDCRNConfig(**p["config"])
            row = {"key": p["key"], "macs_per_s": p["macs_per_s"], "inherited": inherited_score(sn, cfg, val)}
            print(f"{p['key']} inherited: {row['inherited']['val_si_sdr_db']:.2f} dB", flush=True)
            for lr in lrs:
                how = f"lr{lr:g}-b{a.batch}-s{a.segment_s:g}-{a.steps}-{a.kd}"
                run = a.out / f"step{state['steps']}" / p["key"] / how
                tcfg = TrainConfig(epochs=1, batch_size=a.batch, lr=lr, segment_s=a.segment_s, threads=a.threads,
                                   val_pesq_clips=5, ckpt_every=25, seed=0)
                train_model(cfg, run, tcfg, kd=KDSpec(a.kd, teacher), init=sn.extract(cfg).state_dict(),
                            progress=False, steps=a.steps, meta={"command": f"benchmarks/supernet_finetune.py {lr:g}"})
                row[f"lr{lr:g}"] = val_score(run)
                print(f"{p['key']} lr {lr:g}: {row[f'lr{lr:g}']['val_si_sdr_db']:.2f} dB", flush=True)
            rows.append(row)
    gain = {f"lr{lr:g}": sum(r[f"lr{lr:g}"]["val_si_sdr_db"] - r["inherited"]["val_si_sdr_db"] for r in rows)
            / len(rows) for lr in lrs}
    gain_pesq = {f"lr{lr:g}": sum(r[f"lr{lr:g}"]["val_pesq_wb"] - r["inherited"]["val_pesq_wb"] for r in rows)
                 / len(rows) for lr in lrs}
    save(a.name, {"supernet": str(a.supernet), "supernet_epoch": state["epoch"], "supernet_steps": state["steps"],
                  "settings": vars(a) | {"supernet": str(a.supernet), "out": str(a.out)}, "rows": rows,
                  "mean_gain_over_inherited_db": gain, "mean_pesq_gain_over_inherited": gain_pesq,
                  "load": load.as_dict(), "machine": fingerprint(),
                  "units": "val SI-SDR dB on all val clips; PESQ-WB on the first 5"}, teacher=True)
    print(json.dumps({"si_sdr": gain, "pesq": gain_pesq}, indent=1))


if __name__ == "__main__":
    main()
