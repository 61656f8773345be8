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

from hwkd import SAMPLE_RATE
from hwkd.errors import HwkdError
from hwkd.hw.cost import count_params, cross_check, macs
from hwkd.hw.export import export_all
from hwkd.hw.measure import Protocol, measure_isolated
from hwkd.hw.targets import latency_source, load_target
from hwkd.models.checkpoint import load_model, save_checkpoint
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.registry import create_model


def load_any(model: str) -> tuple[DPDCRN, str]:
    """A checkpoint (.pt), a preset name or a config file -> (model, label)."""
    p = Path(model)
    if p.suffix == ".pt":
        if not p.is_file():
            raise HwkdError(f"checkpoint not found: {p}", "give a .pt written by hwkd train/distill, or a preset name")
        net, _ = load_model(p)
        return net, p.stem
    return create_model(model).eval(), p.stem if p.suffix else model


def predicted_latency(net: DPDCRN, target: dict, runtimes, threads, macs_per_hop: float) -> list[dict]:
    """Per-hop latency predictions for a target without a reachable device: its calibration where
    `hwkd calibrate` made one, else the uncalibrated default from the chip's figures. Labelled as such."""
    from hwkd.hw.predict import default_prediction, load_predictor
    cfg = net.cfg
    hop_ms = cfg.hop / SAMPLE_RATE * 1e3
    out = []
    for rt in runtimes:
        for th in threads:
            row = {"runtime": rt, "threads": th, "mode": "hop", "audio_ms_per_call": hop_ms}
            if not cfg.causal or cfg.time_attention != "none":
                out.append({**row, "skipped": "no prediction: per-hop cost of a non-streaming model or one with a "
                                              "growing time-attention cache is not constant"})
                continue
            pred = load_predictor(target["name"], rt, th)
            if pred is not None:
                band = pred.predict_band(cfg)
                row.update(p50_ms=band["p50_ms"], band_lo_ms=band["lo_ms"], band_hi_ms=band["hi_ms"],
                           how="predicted (calibrated)", provenance=pred.provenance())
            else:
                row.update(default_prediction(target, cfg, th, macs_per_hop))
            row["rtf"] = row["p50_ms"] / hop_ms
            row["realtime"] = row["p50_ms"] < hop_ms
            out.append(row)
    return out


def check_modes(net: DPDCRN, label: str, modes) -> None:
    """Per-hop streaming needs a causal model: --modes asking for nothing but that of another is refused before
    any export (with offline beside it, the hop rows say why they were not measured)."""
    if modes and set(modes) == {"hop"} and not net.cfg.causal:
        raise HwkdError(f"--modes hop: {label} is not causal, so it cannot run hop by hop",
                        "add offline to --modes (or give a causal model)")


def profile(net: DPDCRN, target: dict | str, out_dir: Path, *, runtimes=None, threads=None,
            protocol: Protocol | None = None, check_macs: bool = False, int8_pairs=None, int8_calib=None,
            progress=print, export: bool = True, modes=None, precisions=None, batches=None) -> dict:
    """`int8_pairs` (a list of hwkd Pairs, possibly empty): also the INT8 offline models (ONNX Runtime dynamic
    quantization; NNCF static quantization of the IR, calibrated on `int8_calib` pairs) with their output
    difference, latency delta here and quality delta on `int8_pairs` (`hwkd.hw.int8`). `export=False`: no
    export (and no parity check) where the target's latency is predicted, which needs no model files (a
    supernet search sizing hundreds of candidates); a measured target is always exported. `modes`,
    `precisions`, `batches` (default: the target's, else the model's own mode, fp32, batch 1): the variants
    measured on a local target, those of one runtime in one process; a variant a runtime cannot run is a row
    saying why."""
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
    check_modes(net, "the model", modes)
    source = latency_source(target)
    mode = "hop" if cfg.causal else "offline"
    variants = [(m, p, b) for m in modes or target.get("modes") or [mode]
                for p in precisions or target.get("precisions") or ["fp32"]
                for b in batches or target.get("batches") or [1]]
    if export or source != "predicted" or int8_pairs is not None:
        from hwkd.hw.gpu import runtime_problem
        ex = export_all(net, out_dir, openvino=runtime_problem("openvino") is None)
        res["export"] = {"offline_onnx": str(ex.offline_onnx), "offline_ir": ex.offline_ir and str(ex.offline_ir),
                         "step_onnx": ex.step_onnx and str(ex.step_onnx), "step_ir": ex.step_ir and str(ex.step_ir),
                         "parity_max_abs": ex.parity, "refused": ex.refused}
        progress(f"  exported to {out_dir} (parity: "
                 + ", ".join(f"{k} {max(v.values()) if isinstance(v, dict) else v:.1e}"
                             for kind in ex.parity.values() for k, v in kind.items()) + ")")
        arts = {"hop": (ex.step_onnx, ex.step_ir), "offline": (ex.offline_onnx, ex.offline_ir)}
        art = arts[mode]
    else:
        res["export"] = None
    res["mode"] = mode
    res["latency"] = []
    remote = None
    if source != "measured":
        if source == "predicted":
            res["latency_note"] = (f"target {target['name']} is remote and names no device (ssh.host); "
                                   "latency is predicted, not measured")
            progress("  " + res["latency_note"])
            runs = []
            res["latency"] = predicted_latency(net, target, runtimes or target["runtimes"],
                                               threads or target["threads"], cost["macs"] / cost["frames"])
            for p in res["latency"]:
                progress(f"  {p['runtime']:<12} {p['threads']} thr  hop: "
                         + (f"p50 {p['p50_ms']:.3f} ms  {p['how']}" if "p50_ms" in p else p["skipped"]))
        else:
            from hwkd.hw.remote import Device
            remote = Device(target)
            runs = [(rt, th) for rt in runtimes or target["runtimes"] for th in threads or target["threads"]]
    else:
        ckpt = out_dir / "model.pt"
        save_checkpoint(ckpt, net)
        for rt in runtimes or target["runtimes"]:
            for th in threads or target["threads"]:
                res["latency"] += _measure_variants(cfg, rt, th, variants, ckpt, arts, proto, progress)
        runs = []
    if source != "measured" and variants != [(mode, "fp32", 1)]:
        progress(f"  {target['name']} is {'measured over SSH' if source == 'ssh' else 'predicted'}: only its own mode "
                 f"({mode}), fp32, batch 1; the other modes, precisions and batches asked for are not measured")
    for rt, th in runs:            # over SSH: the model's own mode, fp32, batch 1
        if rt == "openvino" and art[1] is None:
            from hwkd.hw.gpu import runtime_problem
            why = runtime_problem("openvino") or "OpenVINO IR refused by the parity check"
            res["latency"].append({"runtime": rt, "threads": th, "skipped": why})
            continue
        files = [art[0]] if rt != "openvino" else [art[1], art[1].with_suffix(".bin")]
        m = remote.measure(rt, mode, th, files, hop=cfg.hop, in_channels=cfg.in_channels, protocol=proto)
        res["latency"].append(m.as_dict())
        progress(_line(m, "  BUSY (other processes used the machine)" if m.busy else ""))
    if int8_pairs is not None:
        from hwkd.hw.int8 import int8_variants
        res["int8"] = int8_variants(ex.offline_onnx, ex.offline_ir, out_dir, cfg.in_channels, cfg.hop,
                                    (threads or target["threads"])[0], proto, int8_pairs, int8_calib, progress)
    res["protocol"] = proto.__dict__
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    (out_dir / "profile.json").write_text(json.dumps(res, indent=1, default=str))
    return res


def _measure_variants(cfg, rt: str, th: int, variants, ckpt: Path, arts: dict, proto, progress) -> list[dict]:
    """The variants (mode, precision, batch) of one local runtime and thread count: rows of measurements, or
    of why a variant was not measured."""
    from hwkd.hw.gpu import is_gpu, runtime_problem
    from hwkd.hw.measure import measure_isolated_many, variant_problem
    rows, todo = [], []
    problem = runtime_problem(rt)
    if problem:                     # one row for the runtime, not one per variant
        progress(f"  {rt:<12} {th} thr: not measured ({problem})")
        return [{"runtime": rt, "threads": th, "mode": None, "precision": None, "batch": None, "skipped": problem}]
    for mode, prec, batch in variants:
        row = {"runtime": rt, "threads": th, "mode": mode, "precision": prec, "batch": batch}
        why = variant_problem(rt, mode, prec, batch, cfg)
        if why is None and rt == "openvino" and arts[mode][1] is None:
            why = "OpenVINO IR refused by the parity check"
        if why:
            rows.append({**row, "skipped": why})
            progress(f"  {rt:<12} {th} thr  {mode} {prec} batch {batch}: not measured ({why})")
            continue
        rows.append(row)
        todo.append((row, dict(runtime=rt, mode=mode, threads=th, ckpt=ckpt, onnx=arts[mode][0], ir=arts[mode][1],
                                hop=cfg.hop, in_channels=cfg.in_channels, protocol=proto, precision=prec,
                                batch=batch)))
    if len(todo) == 1:
        row, spec = todo[0]
        try:
            results = [measure_isolated(**spec)]
        except HwkdError as e:
            if not is_gpu(rt):                # a CPU runtime that fails is an error, as it always was
                raise
            results = [str(e).splitlines()[0]]
    else:
        results = measure_isolated_many([spec for _, spec in todo]) if todo else []
    for (row, _), m in zip(todo, results):
        if isinstance(m, str):
            row["skipped"] = f"failed: {m}"
            progress(f"  {rt:<12} {th} thr  {row['mode']} {row['precision']} batch {row['batch']}: {row['skipped']}")
            continue
        row.clear()
        row.update(m.as_dict())
        progress(_line(m, "  BUSY (other processes used the machine)" if m.busy else ""))
    return rows


def _line(m, flag: str) -> str:
    variant = "" if (m.precision, m.batch) == ("fp32", 1) else f" {m.precision} batch {m.batch}"
    dev = f"  device peak {m.peak_device_mib} MiB" if m.peak_device_mib is not None else ""
    events = f" (CUDA events {m.event_p50_ms:.3f})" if m.event_p50_ms is not None else ""
    return (f"  {m.runtime:<12} {m.threads} thr  {m.mode}{variant}: p50 {m.p50_ms:.3f} ms{events}  p90 "
            f"{m.p90_ms:.3f} ms  per {m.audio_ms_per_call:.0f} ms of audio  RTF {m.rtf:.3f}  peak +{m.peak_rss_mib} "
            f"MiB{dev}{flag}")


def bench_rows(res: dict, label: str, target: str) -> list[dict]:
    """The rows of a `hwkd bench` table for one profile (one per runtime x threads): one column set for measured,
    predicted and skipped latencies alike, each row saying how its figure was obtained ("how") and, where
    predicted or not measured, why ("note")."""
    rows = []
    base = {"model": label, "target": target, "params": res["params"],
            "gmacs_per_s": round(res["macs_per_s"] / 1e9, 4), "mode": res["mode"]}
    if not res["latency"]:
        rows.append({**base, "how": "not measured", "note": res.get("latency_note", "")})
    for m in res["latency"]:
        var = {k: m.get(k, d) for k, d in (("mode", res["mode"]), ("precision", "fp32"), ("batch", 1))}
        if "skipped" in m:
            rows.append({**base, **var, "runtime": m["runtime"], "threads": m.get("threads"), "how": "not measured",
                         "note": m["skipped"]})
            continue
        if m["how"].startswith("predicted"):
            rows.append({**base, "runtime": m["runtime"], "threads": m["threads"],
                         "p50_ms": round(m["p50_ms"], 4), "audio_ms_per_call": m["audio_ms_per_call"],
                         "rtf": round(m["rtf"], 4), "realtime": m["realtime"], "how": m["how"],
                         "note": m["provenance"]})
            continue
        gpu = m.get("gpu") or {}
        rows.append({**base, **var, "runtime": m["runtime"], "version": m["version"], "threads": m["threads"],
                     "p50_ms": round(m["p50_ms"], 4), "p90_ms": round(m["p90_ms"], 4),
                     "p99_ms": round(m["p99_ms"], 4), "audio_ms_per_call": m["audio_ms_per_call"],
                     "rtf": round(m["rtf"], 4), "realtime": m["realtime"], "peak_rss_mib": m["peak_rss_mib"],
                     "runs": m["runs"], "other_load": round(m["other_load"] or 0, 3), "busy": m["busy"],
                     "how": m["how"], "cpu": m["fingerprint"]["cpu"],
                     **({"event_p50_ms": round(m["event_p50_ms"], 4),
                         "timer_agreement": round(m["timer_agreement"], 4)} if m.get("event_p50_ms") else {}),
                     **({"peak_device_mib": m["peak_device_mib"], "device_mib_nvml": m.get("device_mib_nvml"),
                         "gpu": gpu.get("gpu"), "driver": gpu.get("driver"), "cuda": gpu.get("torch_cuda")}
                        if gpu else {})})
    return rows
