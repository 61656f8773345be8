"""What on-the-fly mixing costs a training step: time to make a batch by mixing vs reading the static clips,
against the time of a cpu-student training step (no KD), in the same process, on the same cores.

Batch 8 of 2-s segments (mono) and batch 8 of 2-s segments (Ambisonics, rooms from the pool: the first use of
a room simulates it, so the Ambisonics figure is given cold — a fresh dataset — and warm). Median of --batches.

    python benchmarks/mixing_cost.py [--batches 10]
"""

import argparse
import statistics
import time

import torch

from hwkd.data.datasets import SpeechPairs
from hwkd.data.mixing import OnTheFlyMix
from hwkd.data.synth import default_dataset
from hwkd.models import create_model
from hwkd.models.enhancer import Enhancer
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.trainer import SEObjective

from _common import save


def batch_times(ds, n, bs, epoch=1):
    ds.set_epoch(epoch)
    out = []
    for k in range(n):
        t0 = time.perf_counter()
        items = [ds[(k * bs + i) % len(ds)] for i in range(bs)]
        torch.stack([it["noisy"] for it in items])
        out.append(time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--versions", default="1,2", help="mixing versions to time (mono); the last one is the headline")
    a = ap.parse_args()
    mono, foa = default_dataset(1), default_dataset(4)
    versions = [int(v) for v in a.versions.split(",")]
    res = {"batch": a.batch, "segment_s": a.segment_s, "torch_threads": torch.get_num_threads(),
           "mixing_version": versions[-1], "mono_mix_batch_s_by_version": {}, "mono_setup_s_by_version": {}}
    with LoadMeter() as load:
        for v in versions:
            t0 = time.perf_counter()
            mix = OnTheFlyMix(mono, segment_s=a.segment_s, version=v)
            res["mono_setup_s_by_version"][v] = round(time.perf_counter() - t0, 2)
            batch_times(mix, 2, a.batch, epoch=7)     # first calls (imports) left out; prompt decoding stays cold
            res["mono_mix_batch_s_by_version"][v] = statistics.median(batch_times(mix, a.batches, a.batch))
        res["mono_mix_batch_s"] = res["mono_mix_batch_s_by_version"][versions[-1]]
        res["mono_setup_s"] = res["mono_setup_s_by_version"][versions[-1]]
        res["mono_static_batch_s"] = statistics.median(
            batch_times(SpeechPairs(mono, split="train", segment_s=a.segment_s), a.batches, a.batch))
        fmix = OnTheFlyMix(foa, segment_s=a.segment_s, version=versions[-1])
        res["foa_mix_batch_cold_s"] = statistics.median(batch_times(fmix, a.batches, a.batch))
        res["foa_mix_batch_warm_s"] = statistics.median(batch_times(fmix, a.batches, a.batch))   # same rooms
        enh = Enhancer(create_model("cpu-student"))
        opt = torch.optim.Adam(enh.parameters(), 1e-4)
        obj = SEObjective()
        mix.set_epoch(0)
        items = [mix[i] for i in range(a.batch)]
        batch = {"noisy": torch.stack([it["noisy"] for it in items]),
                 "clean": torch.stack([it["clean"] for it in items])}
        steps = []
        for _ in range(4):
            t0 = time.perf_counter()
            loss, _ = obj(enh, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps.append(time.perf_counter() - t0)
        res["cpu_student_step_s"] = statistics.median(steps[1:])
    res["mono_overhead_vs_step"] = (res["mono_mix_batch_s"] - res["mono_static_batch_s"]) / res["cpu_student_step_s"]
    res["mono_mix_vs_step"] = res["mono_mix_batch_s"] / res["cpu_student_step_s"]
    res["load"] = load.as_dict()
    res["machine"] = fingerprint()
    for k, v in res.items():
        if isinstance(v, float):
            print(f"{k:<26} {v:.4f}")
    save("mixing_cost", res)


if __name__ == "__main__":
    main()
