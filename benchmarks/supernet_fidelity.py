"""Supernet fidelity: do inherited weights rank and score sub-networks as training them alone would?

For --n sub-networks of the supernet's space, stratified by MACs (the smallest, the largest and the rest spread
over equal-count MAC bins, drawn with --seed), two scores on the val split:
- inherited: the sub-network's weights from the trained supernet, fine-tuned --finetune steps with the one
  training recipe (I²SRF-TFCKD from the teacher, half the peak lr; 0 = scored as inherited);
- standalone: the same architecture trained alone with the same recipe for --standalone steps (>= 10x the
  fine-tune), from the identity start.
Reports the mean gap (standalone - inherited, dB SI-SDR), Kendall τ and Spearman ρ between the two rankings,
and τ of a MACs-only ranker against the standalone ranking (in a nested space size alone ranks well; the
supernet has to beat it to be worth its cost). Each sub-network's runs are folders under --out
and resume after a kill. Writes results/supernet_fidelity.json.

The standalone runs do not need the supernet: without --supernet (give --space) only they are trained. Each
standalone score is also kept in results/supernet_fidelity_standalone.json under its candidate and settings
(teacher included) and reused from there, so the long part survives a machine reset once committed and can run
while the supernet still trains.

    python benchmarks/supernet_fidelity.py --supernet RUN [--n 8] [--finetune 20] [--standalone 400]
    python benchmarks/supernet_fidelity.py --space wide            # the standalone runs alone, ahead
"""

import argparse
import json
import random
from pathlib import Path

from scipy import stats

from hwkd.audio.io import write_text_atomic
from hwkd.hw.cost import macs
from hwkd.kd import uses_teacher
from hwkd.models.checkpoint import load_model, read_checkpoint
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.teacher import embedded_teacher_path, teacher_sha256
from hwkd.paths import hwkd_home
from hwkd.search.run import candidate_key
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.recipe import KDSpec, train_model
from hwkd.train.supernet import load_supernet
from hwkd.train.trainer import TrainConfig

from _common import RESULTS, inherited_score, save, val_score


def macs_of(configs: list) -> dict:
    """MAC/s by candidate key, counted once per machine: kept in $HWKD_HOME/cache/macs.json (counting the 1,440
    candidates of `wide` takes minutes; the count depends on the config alone)."""
    path = hwkd_home() / "cache" / "macs.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    missing = [c for c in configs if candidate_key(c) not in known]
    for c in missing:
        known[candidate_key(c)] = macs(DPDCRN(c))["macs_per_s"]
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(known))
    return {candidate_key(c): known[candidate_key(c)] for c in configs}


def stratified(configs: list, n: int, seed: int) -> list:
    """The smallest and largest by MACs, and n - 2 more, one from each of n - 2 equal-count MAC bins."""
    size = macs_of(configs)
    sized = sorted(configs, key=lambda c: size[candidate_key(c)])
    if n >= len(sized):
        return sized
    rng = random.Random(seed)
    inner = sized[1:-1]
    bins = [inner[i * len(inner) // (n - 2):(i + 1) * len(inner) // (n - 2)] for i in range(n - 2)]
    return [sized[0]] + [rng.choice(b) for b in bins if b] + [sized[-1]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", type=Path, default=None, help="the supernet's run folder")
    ap.add_argument("--space", default=None, help="without --supernet: the space whose standalone runs to train")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--finetune", type=int, default=20, help="fine-tune steps from inherited weights (0: none)")
    ap.add_argument("--standalone", type=int, default=400, help="steps of the standalone runs (>= 10x --finetune)")
    ap.add_argument("--kd", default="i2srf-tfckd")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=hwkd_home() / "runs" / "supernet_fidelity")
    ap.add_argument("--name", default="supernet_fidelity")
    a = ap.parse_args()
    if a.finetune and a.standalone < 10 * a.finetune:
        raise SystemExit(f"--standalone {a.standalone} must be at least 10x --finetune {a.finetune}")
    if (a.supernet is None) == (a.space is None):
        raise SystemExit("give --supernet RUN (the whole benchmark) or --space NAME (its standalone runs alone)")
    if a.supernet is not None:
        sn, configs = load_supernet(a.supernet)
        best = read_checkpoint(a.supernet / "best.pt")["train"]["history"][-1]     # the weights inherited
        trained_for = {"supernet_epoch": best["epoch"], "supernet_steps": best["steps"]}
    else:
        from hwkd.search.space import load_space
        sn, configs, trained_for = None, load_space(a.space).configs(), {}
    teacher = load_model(embedded_teacher_path())[0] if uses_teacher(a.kd) else None
    cache_file = RESULTS / "supernet_fidelity_standalone.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    signature = {k: getattr(a, k) for k in ("kd", "batch", "segment_s", "lr", "standalone", "seed")}
    signature["teacher_sha256"] = teacher_sha256(embedded_teacher_path()) if teacher is not None else None
    picks = stratified(configs, a.n, a.seed)
    rows = []
    for cfg in picks:
        key = candidate_key(cfg)
        row = {"config": cfg.to_dict(), "key": key, "macs_per_s": macs_of([cfg])[key]}
        modes = [("standalone", a.standalone, None, a.lr)]
        if sn is not None:
            modes.insert(0, ("inherited", a.finetune, sn.extract(cfg).state_dict(), a.lr * 0.5))
        for mode, steps, init, lr in modes:
            kept = cache.get(key, {})
            if mode == "standalone" and kept.get("signature") == signature:
                row[mode] = {**kept["result"], "reused_from": str(cache_file.name)}
                print(f"{key} {mode}: val SI-SDR {kept['result']['val_si_sdr_db']:.2f} dB (kept)")
                continue
            # inherited runs are kept per supernet state (its best.pt's step): a rerun on a supernet trained further
            # must not reuse fine-tunes of older weights
            run = a.out / key / (mode if mode == "standalone" else f"{mode}-step{trained_for['supernet_steps']}")
            tcfg = TrainConfig(epochs=1, batch_size=a.batch, lr=lr, segment_s=a.segment_s, threads=a.threads,
                               val_pesq_clips=5, ckpt_every=25, seed=a.seed)
            with LoadMeter() as load:
                if mode == "inherited" and steps == 0:
                    from hwkd.data.datasets import SpeechPairs
                    from hwkd.data.synth import default_dataset
                    val = SpeechPairs(default_dataset(cfg.in_channels), split="val", mode="utterance",
                                      channels=cfg.in_channels)
                    score = inherited_score(sn, cfg, val)
                else:
                    train_model(cfg, run, tcfg, kd=KDSpec(a.kd, teacher), init=init, progress=False, steps=steps,
                                meta={"command": f"benchmarks/supernet_fidelity.py {key} {mode}"})
                    score = val_score(run)
                    steps = score.pop("steps")                # as trained: the budget in whole epochs
            row[mode] = {**score, "steps": steps, "load": load.as_dict()}
            print(f"{key} {mode}: val SI-SDR {score['val_si_sdr_db']:.2f} dB after {steps} steps")
            if mode == "standalone":
                cache[key] = {"signature": signature, "config": cfg.to_dict(), "result": row[mode],
                              "machine": fingerprint()}
                cache_file.write_text(json.dumps(cache, indent=1) + "\n")
        rows.append(row)
        if sn is None:
            continue
        inh = [r["inherited"]["val_si_sdr_db"] for r in rows]
        alone = [r["standalone"]["val_si_sdr_db"] for r in rows]
        size = [r["macs_per_s"] for r in rows]
        res = {"machine": fingerprint(), "supernet": str(a.supernet), **trained_for,
               "settings": vars(a) | {"out": str(a.out), "supernet": str(a.supernet)}, "rows": rows}
        if len(rows) >= 3:
            res.update({
                "mean_gap_db": sum(s - i for s, i in zip(alone, inh)) / len(rows),
                "kendall_tau": stats.kendalltau(inh, alone).statistic,
                "spearman_rho": stats.spearmanr(inh, alone).statistic,
                "kendall_tau_macs_only": stats.kendalltau(size, alone).statistic})
        save(a.name, res, teacher=True)


if __name__ == "__main__":
    main()
