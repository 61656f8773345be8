"""Profile a model on a target: params, MACs, export with parity, and latency per runtime and thread count.

Local targets are measured here (each measurement in its own process, see `measure_isolated`). A causal
model is measured hop by hop on its streaming step model (the real-time figure); a non-causal one offline
on 1 s of audio per call (it cannot stream). Remote targets are measured over SSH when the target names a
device (`hwkd.hw.remote`); without one, no latency is reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hwkd.errors import HwkdError
from hwkd.hw.cost import count_params, cross_check, macs
from hwkd.hw.export import export_all
from hwkd.hw.measure import Protocol, measure_isolated
from hwkd.models.checkpoint import load_model, save_checkpoint
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.registry import create_model
from hwkd.targets import is_local, load_target


def load_any(model: str) -> tuple[DPDCRN, str]:
    """A checkpoint (.pt), a preset name or a config file -> (model, label)."""
    p = Path(model)
    if p.suffix == ".pt":
        if not p.is_file():
            raise HwkdError(f"checkpoint not found: {p}", "give a .pt written by hwkd train/distill, or a preset name")
        net, _ = load_model(p)
        return net, p.stem
    return create_model(model).eval(), p.stem if p.suffix else model


def profile(net: DPDCRN, target: dict | str, out_dir: Path, *, runtimes=None, threads=None,
            protocol: Protocol | None = None, check_macs: bool = False, progress=print) -> dict:
    t0 = time.perf_counter()
    target = load_target(target) if isinstance(target, str) else target
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    cfg = net.cfg
    proto = protocol or Protocol.named("quick")
    cost = macs(net)
    res = {"target": target["name"], "model": cfg.to_dict(), "params": count_params(net),
           "macs_per_s": cost["macs_per_s"], "macs_frames": cost["frames"], "macs_by_module": cost["by_module"],
           "macs_counted_by": cost["counted_by"]}
    if check_macs:
        res["macs_cross_check"] = cross_check(net)
    progress(f"  {res['params']:,} parameters, {cost['macs_per_s'] / 1e9:.3f} GMAC per second of audio "
             f"({cost['frames']} frames, hop {cfg.hop})")
    ex = export_all(net, out_dir, openvino=True)
    res["export"] = {"offline_onnx": str(ex.offline_onnx), "offline_ir": ex.offline_ir and str(ex.offline_ir),
                     "step_onnx": ex.step_onnx and str(ex.step_onnx), "step_ir": ex.step_ir and str(ex.step_ir),
                     "parity_max_abs": ex.parity, "refused": ex.refused}
    progress(f"  exported to {out_dir} (parity: "
             + ", ".join(f"{k} {max(v.values()) if isinstance(v, dict) else v:.1e}"
                         for kind in ex.parity.values() for k, v in kind.items()) + ")")
    mode = "hop" if cfg.causal else "offline"
    res["mode"] = mode
    res["latency"] = []
    art = {"hop": (ex.step_onnx, ex.step_ir), "offline": (ex.offline_onnx, ex.offline_ir)}[mode]
    remote = None
    if not is_local(target):
        if not (target.get("ssh") or {}).get("host"):
            res["latency_note"] = (f"target {target['name']} is remote and names no device (ssh.host); "
                                   "no latency was measured")
            progress("  " + res["latency_note"])
            runs = []
        else:
            from hwkd.hw.remote import Device
            remote = Device(target)
            runs = [(rt, th) for rt in runtimes or target["runtimes"] for th in threads or target["threads"]]
    else:
        ckpt = out_dir / "model.pt"
        save_checkpoint(ckpt, net)
        runs = [(rt, th) for rt in runtimes or target["runtimes"] for th in threads or target["threads"]]
    for rt, th in runs:
        if rt == "openvino" and art[1] is None:
            res["latency"].append({"runtime": rt, "threads": th, "skipped": "OpenVINO IR refused by the parity check"})
            continue
        if remote is not None:
            files = [art[0]] if rt != "openvino" else [art[1], art[1].with_suffix(".bin")]
            m = remote.measure(rt, mode, th, files, hop=cfg.hop, in_channels=cfg.in_channels, protocol=proto)
        else:
            m = measure_isolated(rt, mode, th, ckpt=ckpt, onnx=art[0], ir=art[1], hop=cfg.hop,
                                 in_channels=cfg.in_channels, protocol=proto)
        res["latency"].append(m.as_dict())
        flag = "  BUSY (other processes used the machine)" if m.busy else ""
        progress(f"  {rt:<12} {th} thr  {mode}: p50 {m.p50_ms:.3f} ms  p90 {m.p90_ms:.3f} ms  "
                 f"per {m.audio_ms_per_call:.0f} ms of audio  RTF {m.rtf:.3f}  peak +{m.peak_rss_mib} MiB{flag}")
    res["protocol"] = proto.__dict__
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    (out_dir / "profile.json").write_text(json.dumps(res, indent=1, default=str))
    return res
