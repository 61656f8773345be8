"""The GPU column of the hardware lab: one protocol (hwkd.hw.measure) and one table for this machine's CPU
(ONNX Runtime, OpenVINO) and its GPU (torch on CUDA eagerly and as CUDA graphs; ONNX Runtime's CUDA and
TensorRT providers where the installed onnxruntime has them), per-hop streaming and offline (1 s of audio per
call), batch 1 and a batch that fills the device, fp32 and fp16, for the paper presets, the embedded
teacher(s), a small streaming preset and members of a search front; with the quality delta of fp16 (the
embedded teachers on val clips) and the cross-check of hwkd's wall-clock GPU timing against CUDA events.

Latency does not depend on the weights' values (no data-dependent control flow), so presets and front members
are timed with freshly initialised weights; only the fp16 quality delta needs trained ones.

Usage: python benchmarks/gpu_lab.py [--models a,b] [--front 3] [--batch 64] [--cpu-threads 1]
       [--protocol lab] [--fp16-clips 20] [--data DIR] [--name gpu_lab]
The CPU column: ONNX Runtime (target cpu) and OpenVINO (target openvino-cpu) at --cpu-threads.
Writes results/NAME.json (rows as `hwkd bench` writes them, the GPU fingerprint, the fp16 deltas, the
cross-check, and a summary per model: per-hop GPU latency against the CPU's, and the per-stream cost at batch).
On a machine without a GPU the GPU rows say why they are missing (no result is invented).
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from hwkd.hw.gpu import gpu_fingerprint, runtime_problem
from hwkd.hw.measure import Protocol
from hwkd.hw.profile import bench_rows, profile
from hwkd.hw.targets import load_target
from hwkd.models.checkpoint import load_model
from hwkd.models.registry import create_model
from hwkd.models.teacher import ASSET_FOA, embedded_teacher_path
from hwkd.sysinfo import fingerprint

from _common import save

REPO = Path(__file__).resolve().parents[1]
FRONT = REPO / "reports" / "rpi4-20261130-125736" / "front.csv"
AGREEMENT_GOAL = 0.05          # hwkd's GPU timing within +-5 % of CUDA events (issue: the GPU column)


def front_configs(path: Path, n: int) -> list[tuple[str, dict]]:
    """The first `n` members of a search front (front.csv's cfg_* columns), smallest first."""
    if n <= 0 or not path.is_file():
        return []
    rows = [r for r in csv.DictReader(path.open()) if r.get("on_front") == "True"]
    rows.sort(key=lambda r: float(r["gmacs_per_s"]))
    out = []
    for r in rows[:n]:
        cfg = {k[4:]: _value(v) for k, v in r.items() if k.startswith("cfg_") and v != ""}
        out.append((f"front-t{r['trial']}", cfg))
    return out


def _value(v: str):
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        return v


def lab_models(spec: str | None, n_front: int) -> list[tuple[str, object, bool]]:
    """(label, model, trained) for the default list or `spec` (comma-separated presets or checkpoints)."""
    out = []
    if spec:
        for m in spec.split(","):
            if m.endswith(".pt"):
                out.append((Path(m).stem, load_model(m)[0], True))
            else:
                out.append((m, create_model(m), False))
        return out
    for preset in ("paper-teacher", "paper-student", "cpu-student-causal"):
        out.append((preset, create_model(preset), False))
    out.append(("embedded-teacher-mono", load_model(embedded_teacher_path(1))[0], True))
    if ASSET_FOA.is_file():              # embedded_teacher_path(4) falls back to the mono teacher
        out.append(("embedded-teacher-foa", load_model(ASSET_FOA)[0], True))
    out += [(label, create_model(cfg), False) for label, cfg in front_configs(FRONT, n_front)]
    return out


def fp16_delta(net, pairs, device: str) -> dict:
    """The quality delta of running the network in fp16 on `device` (the STFT stays fp32), on `pairs`."""
    import torch

    from hwkd.hw.int8 import quality_delta
    dev = torch.device(device)
    n32 = net.float().eval().to(dev)
    n16 = create_model(net.cfg).eval()
    n16.load_state_dict(net.state_dict())
    n16 = n16.to(dev, torch.float16)

    def runner(model, dtype):
        def call(feats: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(feats).to(dev, dtype)).float().cpu().numpy()
        return call
    res = quality_delta(runner(n32, torch.float32), runner(n16, torch.float16), pairs, net.cfg.in_channels,
                        net.cfg.hop, name="fp16")
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", **res}


def summarise(rows: list[dict], batch: int) -> dict:
    """Per model: hop p50 on the GPU (torch eager / graph, fp32, one stream) against the CPU's best one-stream
    figure; offline RTF at batch 1 on the CPU against the GPU's at `batch` (per second of audio)."""
    out = {}
    measured = [r for r in rows if r.get("how") == "measured"]
    cpu_rt = ("onnxruntime", "openvino", "torch")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in measured if r["model"] == model]

        def best(pred, mine=mine):
            hits = [r for r in mine if pred(r)]
            return min(hits, key=lambda r: r["p50_ms"]) if hits else None
        s = {}
        cpu_hop = best(lambda r: r["mode"] == "hop" and r["runtime"] in cpu_rt)
        for rt in ("torch-cuda", "torch-cuda-graph", "onnxruntime-cuda", "onnxruntime-trt"):
            g = best(lambda r, rt=rt: r["mode"] == "hop" and r["runtime"] == rt and r["precision"] == "fp32"
                     and r["batch"] == 1)
            if g and cpu_hop:
                s[f"hop_{rt}_over_cpu"] = g["p50_ms"] / cpu_hop["p50_ms"]
                s[f"hop_{rt}_p50_ms"] = g["p50_ms"]
            gb = best(lambda r, rt=rt: r["mode"] == "hop" and r["runtime"] == rt and r["batch"] == batch)
            if gb:
                s[f"hop_{rt}_batch{batch}_per_stream_ms"] = gb["p50_ms"] / batch
        if cpu_hop:
            s["hop_cpu_best"] = {k: cpu_hop[k] for k in ("runtime", "threads", "p50_ms")}
        cpu_off = best(lambda r: r["mode"] == "offline" and r["runtime"] in cpu_rt)
        gpu_off = best(lambda r: r["mode"] == "offline" and r["runtime"] not in cpu_rt and r["batch"] == batch)
        if cpu_off:
            s["offline_cpu_rtf"] = cpu_off["rtf"]
        if gpu_off:
            s[f"offline_gpu_batch{batch}_rtf"] = gpu_off["rtf"]
            s["offline_gpu_best"] = {k: gpu_off[k] for k in ("runtime", "precision", "p50_ms")}
        if cpu_off and gpu_off:
            s["offline_speedup_gpu_batch_over_cpu"] = cpu_off["rtf"] / gpu_off["rtf"]
        out[model] = s
    return out


def cross_check(rows: list[dict]) -> dict:
    pairs = [(r["model"], r["runtime"], r["mode"], r["precision"], r["batch"], r["timer_agreement"])
             for r in rows if r.get("timer_agreement") is not None and r["timer_agreement"] == r["timer_agreement"]]
    worst = max((abs(p[-1]) for p in pairs), default=None)
    return {"timer": "wall clock (perf_counter, the call until a CUDA event after it is reached) against CUDA "
                     "events recorded on the stream around the call, p50 of each",
            "rows": len(pairs), "worst_abs_disagreement": worst,
            "within_goal": None if worst is None else worst <= AGREEMENT_GOAL, "goal": AGREEMENT_GOAL,
            "per_row": [dict(zip(("model", "runtime", "mode", "precision", "batch", "agreement"), p)) for p in pairs]}


def markdown(rows: list[dict]) -> str:
    head = "| model | mode | runtime | threads | precision | batch | p50 ms | p90 ms | RTF | device MiB |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if r.get("how") != "measured":
            continue
        lines.append(f"| {r['model']} | {r['mode']} | {r['runtime']} | {r['threads']} | {r['precision']} | "
                     f"{r['batch']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['rtf']:.4f} | "
                     f"{r.get('peak_device_mib') or ''} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=None, help="comma-separated presets or checkpoints (default: the lab's list)")
    ap.add_argument("--front", type=int, default=3, help="members of the committed rpi4 front (default 3)")
    ap.add_argument("--targets", default="cpu,openvino-cpu,cuda")
    ap.add_argument("--batch", type=int, default=64, help="the batch that fills the device (default 64)")
    ap.add_argument("--cpu-threads", default="1", help="CPU thread counts (default 1)")
    ap.add_argument("--protocol", default="lab", choices=("lab", "quick", "default", "mlperf"),
                    help="lab (default): 5 warm-up + 30 runs / 0.3 s, so a 13-GMAC offline call on one CPU thread "
                         "costs seconds, not minutes; the others as hwkd bench's")
    ap.add_argument("--fp16-clips", type=int, default=20, help="val clips for the fp16 quality delta (0: none)")
    ap.add_argument("--fp16-device", default="cuda", help="where the fp16 delta runs (default cuda; cpu to check "
                                                           "the path on a machine without a GPU)")
    ap.add_argument("--data", type=Path, default=None, help="dataset for the fp16 delta (default: the embedded "
                                                            "corpus)")
    ap.add_argument("--name", default="gpu_lab")
    a = ap.parse_args()
    t0 = time.perf_counter()
    proto = Protocol(warmup=5, runs=30, min_s=0.3) if a.protocol == "lab" else Protocol.named(a.protocol)
    cpu_threads = [int(t) for t in a.cpu_threads.split(",")]
    rows, failures = [], []

    def record(fp16=None):              # written after every model: a GPU session cut short keeps what it measured
        out = {"machine": fingerprint(), "gpu": gpu_fingerprint(), "protocol": proto.__dict__,
               "batch": a.batch, "cpu_threads": cpu_threads, "rows": rows, "summary": summarise(rows, a.batch),
               "cross_check": cross_check(rows), "fp16_quality": fp16, "failures": failures,
               "weights": "presets and front members freshly initialised (latency does not depend on weight "
                          "values); the embedded teachers trained",
               "complete": fp16 is not None, "wall_s": round(time.perf_counter() - t0, 1)}
        save(a.name, out, teacher=True)
        return out

    with tempfile.TemporaryDirectory(prefix="hwkd-gpu-lab-") as tmp:
        for label, net, _trained in lab_models(a.models, a.front):
            for tname in a.targets.split(","):
                target = load_target(tname)
                gpu = target["device"]["type"] == "cuda"
                runtimes = ["onnxruntime"] if tname == "cpu" else target["runtimes"]   # not torch eager on a CPU
                missing = {rt: runtime_problem(rt) for rt in runtimes}
                if all(missing.values()):     # nothing to measure: no export either
                    rows += [dict(model=label, target=tname, runtime=rt, how="not measured", note=why)
                             for rt, why in missing.items()]
                    continue
                print(f"{label} on {tname}", flush=True)
                try:
                    res = profile(net, target, Path(tmp) / f"{label}-{tname}", protocol=proto, runtimes=runtimes,
                                  threads=None if gpu else cpu_threads,
                                  modes=None if gpu else ["hop", "offline"] if net.cfg.causal else ["offline"],
                                  precisions=None if gpu else ["fp32"], batches=[1, a.batch] if gpu else [1])
                except Exception as e:        # one model's failure does not cost the others
                    failures.append({"model": label, "target": tname, "error": f"{type(e).__name__}: {e}"})
                    print(f"  FAILED: {failures[-1]['error']}", flush=True)
                    continue
                rows += bench_rows(res, label, tname)
            record()
    fp16 = {}
    if a.fp16_clips > 0:
        problem = runtime_problem("torch-cuda") if a.fp16_device == "cuda" else None
        if problem:
            fp16["skipped"] = problem
        else:
            from hwkd.cli import default_dataset
            from hwkd.data.datasets import select_pairs
            from hwkd.data.layouts import scan
            for label, net, trained in lab_models(a.models, 0):
                if not trained:
                    continue
                data = a.data or default_dataset(net.cfg.in_channels)
                pairs = select_pairs(scan(data, channels=net.cfg.in_channels), "val")[:a.fp16_clips]
                try:
                    fp16[label] = fp16_delta(net, pairs, a.fp16_device)
                except Exception as e:
                    fp16[label] = {"failed": f"{type(e).__name__}: {e}"}
                print(f"fp16 {label}: {fp16[label].get('delta', fp16[label].get('failed'))}", flush=True)
    out = record(fp16)
    print(markdown(rows))
    print({k: out["cross_check"][k] for k in ("rows", "worst_abs_disagreement", "within_goal")})


if __name__ == "__main__":
    main()
