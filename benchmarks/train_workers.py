"""Data-parallel workers on CPU: seconds per training step of hwkd's recipe, 1 process x T threads against
W processes x T/W threads (hwkd.train.trainer, `--workers`), per batch size.

Each point is a real run of hwkd.train.recipe.train_model on the embedded corpus (on-the-fly mixing) for
--steps steps; the figure is the median step time the trainer records (its first step included in the
median, not in a mean). The student is the time-to-quality one (~47k parameters, causal). Points are taken
in alternation (1, W, 1, W, ...) --repeats times and the median of the medians kept, so slow drift in the
machine's load hits both alike.

    python benchmarks/train_workers.py [--batches 4,8] [--workers 2] [--threads 2] [--steps 12] [--repeats 2]
Writes results/train_workers.json.
"""

import argparse
import statistics
import tempfile

import torch

from hwkd.data.synth import default_dataset
from hwkd.models.dpdcrn import DPDCRNConfig
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.recipe import train_model
from hwkd.train.trainer import TrainConfig

from _common import save

STUDENT = dict(channels=20, layers=1, depth=3, heads=1, gru_hidden=32, causal=True, time_attention="none")


def step_s(cfg, data, batch: int, workers: int, threads: int, steps: int, segment_s: float) -> float:
    t = TrainConfig(epochs=1, batch_size=batch, lr=2e-3, segment_s=segment_s, threads=threads, workers=workers,
                    max_steps_per_epoch=steps, val_pesq_clips=0, ckpt_every=0)
    with tempfile.TemporaryDirectory() as d:
        out = train_model(cfg, d, t, data=data, progress=False)
    return out["history"][-1]["step_s_median"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--segment-s", type=float, default=2.0)
    a = ap.parse_args()
    cfg = DPDCRNConfig(**STUDENT)
    data = default_dataset(1)
    res = {"machine": fingerprint(), "torch": torch.__version__, "student": STUDENT, "segment_s": a.segment_s,
           "threads": a.threads, "steps": a.steps, "repeats": a.repeats,
           "how": "median step time recorded by hwkd's trainer over --steps steps of a real run (on-the-fly "
                  "mixing, Adam, clipping; validation excluded); median over repeats taken in alternation",
           "points": {}}
    with LoadMeter() as load:
        for b in map(int, a.batches.split(",")):
            one, many = [], []
            for _ in range(a.repeats):
                one.append(step_s(cfg, data, b, 1, a.threads, a.steps, a.segment_s))
                many.append(step_s(cfg, data, b, a.workers, a.threads, a.steps, a.segment_s))
            s1, sw = statistics.median(one), statistics.median(many)
            res["points"][f"batch {b}"] = {
                "one_process_s": s1, f"{a.workers}_workers_s": sw, "runs_one": one, "runs_workers": many,
                "speedup": s1 / sw, "audio_s_per_s_one": b * a.segment_s / s1,
                "audio_s_per_s_workers": b * a.segment_s / sw}
            print(f"batch {b}: 1 x {a.threads} threads {s1:.3f} s/step, {a.workers} workers x "
                  f"{max(1, a.threads // a.workers)} thread(s) {sw:.3f} s/step: x{s1 / sw:.2f}")
    res["load"] = load.as_dict()
    save("train_workers", res)


if __name__ == "__main__":
    main()
