"""Training throughput (4-s segments per second, forward + backward + Adam step, batch 8) per preset.

Writes results/train_throughput.json (CPU) or results/train_throughput_cuda.json (--device cuda).
Usage: python benchmarks/train_throughput.py [--steps 4] [--device cuda]
"""

import argparse
import statistics
import time

import torch

from hwkd.models import create_model, list_presets
from hwkd.models.enhancer import Enhancer
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.losses import se_loss

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--presets", default=",".join(list_presets()))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    res = {"machine": fingerprint(), "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "batch": a.batch,
           "segment_s": 4.0, "timed_steps": a.steps, "warmup_steps": 1 + 2 * cuda, "presets": {}}
    for name in a.presets.split(","):
        model = Enhancer(create_model(name)).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = 0.05 * torch.randn(a.batch, model.net.cfg.in_channels, 64000, device=dev)
        y = 0.05 * torch.randn(a.batch, 64000, device=dev)
        times = []
        warm = res["warmup_steps"]
        with LoadMeter() as m:
            for i in range(a.steps + warm):
                t0 = time.perf_counter()
                loss, _ = se_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if cuda:
                    torch.cuda.synchronize(dev)
                if i >= warm:
                    times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        res["presets"][name] = {"params": sum(p.numel() for p in model.parameters()),
                                "median_step_s": round(med, 4), "segments_per_s": round(a.batch / med, 3),
                                "step_s": [round(t, 4) for t in times], "load": m.as_dict()}
        print(name, res["presets"][name])
    save("train_throughput_cuda" if cuda else "train_throughput", res)


if __name__ == "__main__":
    main()
