"""PESQ-WB gain of inherited sub-networks over the noisy input, on many val clips rather than a search's few.

`hwkd search` scores a candidate's PESQ-WB on the first SearchConfig.val_pesq_clips val clips (5 from scratch;
with a supernet the 25 SI-SDR is scored on, since this benchmark found 5 read high), which is what its report's
"PESQ-WB over noisy" says; a few clips leave a wide interval. For the fidelity benchmark's 8 sub-networks
(results/supernet_fidelity.json, stratified by MACs), scored as inherited from the supernet, this takes the
per-clip gain (enhanced − noisy PESQ-WB, both against the clean target) on the first --clips val clips and
reports its mean with a 95 % t-interval, beside the same mean on the first 5 clips.

    python benchmarks/supernet_pesq.py [--supernet hwkd/assets/supernet] [--clips 100] [--threads 2]
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from hwkd.data.datasets import SpeechPairs
from hwkd.data.synth import default_dataset
from hwkd.metrics.quality import mean_ci, pesq_wb
from hwkd.models.checkpoint import read_checkpoint
from hwkd.models.dpdcrn import DPDCRNConfig
from hwkd.models.enhancer import Enhancer
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.supernet import load_supernet, shipped_supernet

from _common import RESULTS, inherited_model, save

SEARCH_PESQ_CLIPS = 5                   # the first clips a from-scratch search scores PESQ-WB on


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", type=Path, default=None, help="a supernet run folder (default: the shipped one)")
    ap.add_argument("--clips", type=int, default=100, help="first val clips to score (the split has 100)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="supernet_pesq")
    a = ap.parse_args()
    if a.clips < SEARCH_PESQ_CLIPS or a.threads < 1:
        raise SystemExit(f"--clips must be {SEARCH_PESQ_CLIPS} or more and --threads 1 or more")
    path = a.supernet or shipped_supernet()
    if path is None:
        raise SystemExit("no shipped supernet in this install: pass --supernet RUN")
    torch.set_num_threads(a.threads)
    sn, _ = load_supernet(path, "best")
    val = SpeechPairs(default_dataset(1), split="val", mode="utterance", channels=1)
    items = [val[i] for i in range(min(a.clips, len(val)))]
    epoch = read_checkpoint(Path(path) / "best.pt")["train"].get("epoch")
    picks = json.loads((RESULTS / "supernet_fidelity.json").read_text())["rows"]
    with LoadMeter() as load:
        # a clip PESQ cannot score (none in this corpus) would stop the benchmark: the per-clip gain needs both
        noisy = [pesq_wb(it["noisy"][0].numpy(), it["clean"].numpy()) for it in items]
        rows = []
        for p in picks:
            enh = Enhancer(inherited_model(sn, DPDCRNConfig(**p["config"])))
            with torch.no_grad():
                got = [pesq_wb(enh(it["noisy"][None])[0].numpy(), it["clean"].numpy()) for it in items]
            gain = [g - n for g, n in zip(got, noisy)]
            row = {"key": p["key"], "config": p["config"], "macs_per_s": p["macs_per_s"],
                   "pesq_wb": mean_ci(got), "gain": mean_ci(gain),
                   "gain_first_5": statistics.fmean(gain[:SEARCH_PESQ_CLIPS]),
                   "clips_with_gain_below_0.2": sum(x < 0.2 for x in gain)}
            rows.append(row)
            print(f"{p['key']} ({p['macs_per_s'] / 1e6:.0f} M MAC/s): PESQ-WB gain {row['gain']['mean']:+.3f} "
                  f"± {row['gain']['ci95']:.3f} on {len(gain)} clips, {row['gain_first_5']:+.3f} on the first 5",
                  flush=True)
    save(a.name, {"supernet": str(path), "checkpoint": "best.pt", "supernet_epoch": epoch,
                  "clips": len(items), "noisy_pesq_wb": mean_ci(noisy),
                  "noisy_pesq_wb_first_5": statistics.fmean(noisy[:SEARCH_PESQ_CLIPS]), "rows": rows,
                  "threads": a.threads, "load": load.as_dict(), "machine": fingerprint(),
                  "units": "PESQ-WB (ITU-T P.862.2, pesq package) against the clean target; gain = enhanced - noisy "
                           "per clip; ci95 = half-width of the 95 % t-interval of the mean"})


if __name__ == "__main__":
    main()
