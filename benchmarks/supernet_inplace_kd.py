"""Does in-place distillation help the supernet? One stretch of its training continued two (or more) ways.

From one saved state of a supernet run (the end of an epoch, with its optimizer), the next --epochs epochs of the
same schedule are trained once per in-place weight W (`hwkd supernet train --inplace-kd W`: every sub-network
but the largest also learns the largest's output, weighted W); the sandwich's sub-networks and batches are a
function of (seed, step), so the forks see the same data and sub-networks and differ only by W. Each fork's
weights are then scored as inherited (no training) on all val clips for the sub-networks of
results/supernet_fidelity.json (8 stratified by MACs), and the mean difference to W = 0 is reported.

The start state: a run folder (--start DIR), or the committed state of the shipped supernet's training at a
git revision (--from-git REV, e.g. acc3a79: the end of epoch 7 of 14, where the learning rate is still near
half its peak). A finished fork is reused when rerun; an interrupted one resumes.

    python benchmarks/supernet_inplace_kd.py --from-git acc3a79 [--weights 0,1] [--epochs 1] [--threads 2]
"""

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from hwkd.audio.io import write_text_atomic
from hwkd.data.datasets import SpeechPairs
from hwkd.data.synth import default_dataset
from hwkd.models.checkpoint import load_model, read_checkpoint
from hwkd.models.dpdcrn import DPDCRNConfig
from hwkd.models.teacher import embedded_teacher_path
from hwkd.paths import hwkd_home
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.supernet import load_supernet, read_description, train_supernet
from hwkd.train.trainer import TrainConfig

from _common import RESULTS, inherited_score, save

REPO = Path(__file__).resolve().parents[1]
# last.pt last: a folder holding it is whole (it is what marks a copy finished)
STATE = ("supernet.json", "kd_weight.json", "history.jsonl", "last.pt")


def start_from_git(rev: str, dst: Path) -> Path:
    """The committed training/supernet/ state at `rev`, written to dst (once)."""
    if not (dst / "last.pt").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for name in STATE:
            blob = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:training/supernet/{name}"],
                                  capture_output=True, check=True).stdout
            (dst / name).write_bytes(blob)
    return dst


def fork(start: Path, dst: Path, w: float) -> Path:
    """A copy of the start state whose recorded in-place weight is w (the run then resumes under it)."""
    if not (dst / "last.pt").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for name in STATE:
            shutil.copy2(start / name, dst / name)
        desc = json.loads((start / "supernet.json").read_text())
        write_text_atomic(dst / "supernet.json", json.dumps({**desc, "inplace_kd": w}, indent=1))
    return dst


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--start", type=Path, help="a supernet run folder at the end of an epoch")
    src.add_argument("--from-git", metavar="REV", help="training/supernet/ as committed at REV")
    ap.add_argument("--weights", default="0,1", help="in-place weights to compare; the first is the reference")
    ap.add_argument("--epochs", type=int, default=1, help="epochs to continue each fork (1 or more)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=hwkd_home() / "runs" / "supernet_inplace_kd")
    ap.add_argument("--name", default="supernet_inplace_kd")
    a = ap.parse_args()
    weights = [float(x) for x in a.weights.split(",")]
    if a.epochs < 1 or not all(w >= 0 for w in weights):
        raise SystemExit("--epochs must be 1 or more and every --weights value 0 or more")
    start = a.start or start_from_git(a.from_git, a.out / f"start-{a.from_git}")
    if not all((start / name).is_file() for name in STATE):
        raise SystemExit(f"{start} lacks one of {', '.join(STATE)} (a supernet run distilled from a teacher)")
    ck = read_checkpoint(start / "last.pt")["train"]
    if ck["pos"] != 0:
        raise SystemExit(f"{start}/last.pt is mid-epoch (step {ck['pos']}): start from the end of an epoch")
    at_epoch, r = ck["epoch"], ck["config"]           # the run's own schedule and batches
    if at_epoch + a.epochs > r["epochs"]:
        raise SystemExit(f"the start is epoch {at_epoch} of {r['epochs']}: --epochs {a.epochs} runs past the schedule")
    source = f"git-{a.from_git}" if a.from_git else start.resolve().name
    desc, _, configs = read_description(start / "supernet.json")
    teacher = load_model(embedded_teacher_path())[0]
    picks = json.loads((RESULTS / "supernet_fidelity.json").read_text())["rows"]
    val = SpeechPairs(default_dataset(1), split="val", mode="utterance", channels=1)
    lams = None                     # the run's own, from its kd_weight.json
    forks = {}
    for w in weights:
        run = fork(start, a.out / f"{source}-ep{at_epoch}-to{at_epoch + a.epochs}-w{w:g}", w)
        tcfg = TrainConfig(**{k: r[k] for k in ("epochs", "batch_size", "lr", "warmup_frac", "min_lr_ratio",
                                                "grad_clip", "seed", "segment_s", "val_pesq_clips", "val_clips",
                                                "max_steps_per_epoch") if k in r},
                           until_epoch=at_epoch + a.epochs, threads=a.threads, ckpt_every=25)
        done = (run / "last.pt").is_file() and read_checkpoint(run / "last.pt")["train"]["epoch"] >= at_epoch + a.epochs
        with LoadMeter() as load:
            train_supernet(configs, run, tcfg, teacher=teacher, scheme=desc["scheme"], n_random=desc["n_random"],
                           lams=lams, progress=True, inplace_kd=w,
                           meta={"command": f"benchmarks/supernet_inplace_kd.py fork w={w:g}"})
        hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
        end = read_checkpoint(run / "last.pt")["train"]
        assert (end["epoch"], end["pos"]) == (at_epoch + a.epochs, 0), (run, end["epoch"], end["pos"])
        sn, _ = load_supernet(run, "last")
        rows = []
        for p in picks:
            score = inherited_score(sn, DPDCRNConfig(**p["config"]), val)
            rows.append({"key": p["key"], "macs_per_s": p["macs_per_s"], **score})
            print(f"w={w:g} {p['key']}: inherited val SI-SDR {score['val_si_sdr_db']:.2f} dB")
        # load: of this invocation (a fork finished by an earlier one is only scored here; its training's own
        # wall clock is epoch_record's elapsed_s)
        forks[f"{w:g}"] = {"inplace_kd": w, "epoch_record": hist[-1], "rows": rows, "load": load.as_dict(),
                           "trained_by_an_earlier_invocation": done}
    ref = next(iter(forks.values()))["rows"]
    for f in forks.values():
        f["mean_delta_vs_first_db"] = sum(x["val_si_sdr_db"] - y["val_si_sdr_db"]
                                          for x, y in zip(f["rows"], ref)) / len(ref)
        f["wins_vs_first"] = sum(x["val_si_sdr_db"] > y["val_si_sdr_db"] for x, y in zip(f["rows"], ref))
    save(a.name, {"start": str(a.from_git or a.start), "start_epoch": at_epoch, "epochs": a.epochs,
                  "schedule_epochs": r["epochs"], "forks": forks, "threads": a.threads, "machine": fingerprint(),
                  "units": "val SI-SDR dB on all val clips, PESQ-WB on the first 5, sub-networks as inherited (no "
                           "fine-tune)"},
         teacher=True)
    print(json.dumps({w: round(f["mean_delta_vs_first_db"], 3) for w, f in forks.items()}))


if __name__ == "__main__":
    main()
