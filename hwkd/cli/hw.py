"""`hwkd profile`, `hwkd bench` and `hwkd calibrate`: a model's cost and latency on targets, the lab table, the
latency predictor's micro-benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

from hwkd.cli.common import csv_list, default_dataset, formatter
from hwkd.errors import HwkdError


def register(sub) -> None:
    pr = sub.add_parser(
        "profile", formatter_class=formatter,
        help="params, MACs/s, export with parity and measured latency of one model on a target")
    pr.add_argument("model", help="a checkpoint (.pt), a preset (cpu-student, ...) or a model config file")
    pr.add_argument("--target", default="cpu", help="a target name from targets/ or a target YAML (default cpu)")
    add_measure_args(pr)
    pr.add_argument("--out", type=Path, default=None, help="folder for the exports and profile.json "
                                                           "(default: $HWKD_HOME/profiles/MODEL-TARGET)")
    pr.add_argument("--json", action="store_true", help="print the whole profile as JSON")
    pr.add_argument("--int8", action="store_true",
                    help="also INT8 offline models (ONNX Runtime dynamic quantization; NNCF static quantization "
                         "of the OpenVINO IR) with their latency and quality deltas")
    pr.add_argument("--int8-data", type=Path, default=None,
                    help="dataset for the INT8 quality delta (default: the embedded corpus)")
    pr.add_argument("--int8-split", default="val")
    pr.add_argument("--int8-clips", type=int, default=10, help="utterances for the INT8 quality delta (default 10)")
    pr.add_argument("--int8-calib-split", default="train",
                    help="split whose utterances calibrate NNCF's activation ranges (default train)")
    pr.add_argument("--int8-calib-clips", type=int, default=20,
                    help="utterances that calibrate NNCF (default 20)")

    c = sub.add_parser(
        "calibrate", formatter_class=formatter,
        help="run the latency predictor's micro-benchmarks on a target (here, or on its device over SSH)")
    c.add_argument("--target", required=True, help="a target name from targets/ or a target YAML")
    c.add_argument("--runtimes", default=None, help="comma-separated: onnxruntime, openvino (default: the target's)")
    c.add_argument("--threads", default=None, help="comma-separated thread counts (default: the target's)")

    b = sub.add_parser(
        "bench", formatter_class=formatter,
        help="hardware lab table: models x targets x runtimes x threads into one CSV")
    b.add_argument("--models", required=True, help="comma-separated checkpoints, presets or config files")
    b.add_argument("--targets", default="cpu,openvino-cpu", help="comma-separated targets (default cpu,openvino-cpu)")
    add_measure_args(b)
    b.add_argument("--out", type=Path, default=Path("bench.csv"), help="CSV to write (default bench.csv); a "
                                                                      "folder of exports is kept beside it")
    pr.set_defaults(func=cmd_profile)
    c.set_defaults(func=cmd_calibrate)
    b.set_defaults(func=cmd_bench)


def add_measure_args(p) -> None:
    p.add_argument("--runtimes", default=None, help="comma-separated runtimes (default: the target's)")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: the target's)")
    p.add_argument("--modes", default=None,
                   help="comma-separated: hop (per-hop streaming), offline (1 s per call) (default: the target's, "
                        "else hop for a causal model and offline for another)")
    p.add_argument("--precisions", default=None,
                   help="comma-separated: fp32, fp16 (fp16 on GPU runtimes) (default: the target's, else fp32)")
    p.add_argument("--batches", default=None,
                   help="comma-separated batch sizes: streams per hop call (torch runtimes), utterances per offline "
                        "call (default: the target's, else 1)")
    p.add_argument("--protocol", default="default", choices=("quick", "default", "mlperf"),
                   help="quick: 10 warm-up + 60 runs / 0.3 s; default: 30 + 200 / 1 s; "
                        "mlperf: 100 + 1024 / 60 s (MLPerf single-stream)")


def variant_args(args) -> dict:
    """--modes, --precisions, --batches, checked: keyword arguments of hwkd.hw.profile.profile."""
    from hwkd.hw.runtimes import MODES, PRECISIONS, RUNTIMES
    bad = [v for v in csv_list(args.runtimes) or [] if v not in RUNTIMES]
    if bad:
        raise HwkdError(f"--runtimes {args.runtimes}: unknown {bad[0]!r}", f"use {', '.join(RUNTIMES)}")
    out = {}
    for flag, known in (("modes", MODES), ("precisions", PRECISIONS)):
        vals = csv_list(getattr(args, flag))
        bad = [v for v in vals or [] if v not in known]
        if bad:
            raise HwkdError(f"--{flag} {getattr(args, flag)}: unknown {bad[0]!r}", f"use {', '.join(known)}")
        out[flag] = vals
    text = args.batches
    try:
        batches = [int(x) for x in text.split(",") if x.strip()] if text else None
    except ValueError:
        batches = [0]
    if batches is not None and (not batches or min(batches) < 1 or max(batches) > 4096):
        raise HwkdError(f"--batches {text}: batch sizes are whole numbers from 1 to 4096", "e.g. --batches 1,64")
    out["batches"] = batches
    return out


def cmd_profile(args) -> int:
    from hwkd.hw.measure import Protocol
    from hwkd.hw.profile import check_modes, load_any, profile
    from hwkd.hw.targets import load_target
    from hwkd.paths import hwkd_home
    target = load_target(args.target)
    net, label = load_any(args.model)
    variants = variant_args(args)                  # before the INT8 data (a corpus build) or any export
    check_modes(net, label, variants["modes"])
    out = args.out or hwkd_home() / "profiles" / f"{label}-{target['name']}"
    from hwkd.audio.io import check_output
    check_output(out, folder=True, what="--out")
    print(f"hwkd profile: {label} on {target['name']}")
    pairs = calib = None
    if args.int8:
        from hwkd.data.datasets import split_pairs
        from hwkd.data.layouts import scan
        data = args.int8_data or default_dataset(net.cfg.in_channels, progress=not args.quiet)
        sc = scan(data, channels=net.cfg.in_channels)
        pairs = split_pairs(sc, args.int8_split, limit=args.int8_clips)
        if not pairs:
            raise HwkdError(f"no utterances for the INT8 quality delta in {data} [{args.int8_split}]",
                            "give --int8-data with a val split")
        calib = split_pairs(sc, args.int8_calib_split, limit=args.int8_calib_clips)
        if not calib:
            raise HwkdError(f"no utterances to calibrate NNCF in {data} [{args.int8_calib_split}]",
                            "give --int8-calib-split naming a split of --int8-data")
    res = profile(net, target, out, runtimes=csv_list(args.runtimes), threads=csv_list(args.threads, int),
                  protocol=Protocol.named(args.protocol), check_macs=True, int8_pairs=pairs, int8_calib=calib,
                  progress=(lambda *a: None) if args.json else print, **variants)
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        print(f"profile written to {out / 'profile.json'} ({res['wall_s']} s)")
    return 0

def cmd_bench(args) -> int:
    import pandas as pd

    from hwkd.audio.io import check_output
    from hwkd.hw.measure import Protocol
    from hwkd.hw.profile import bench_rows, check_modes, load_any, profile
    from hwkd.hw.targets import load_target
    check_output(args.out, what="--out")
    exports = args.out.with_suffix("") if args.out.suffix else args.out.with_name(args.out.name + "-exports")
    check_output(exports, folder=True, what="the exports folder beside --out")
    targets = [load_target(t) for t in csv_list(args.targets)]
    variants = variant_args(args)
    models = [load_any(m) for m in csv_list(args.models)]
    for net, label in models:                     # before any measurement: a late refusal would lose the table
        check_modes(net, label, variants["modes"])
    rows = []
    for net, label in models:
        for target in targets:
            print(f"hwkd bench: {label} on {target['name']}")
            res = profile(net, target, exports / f"{label}-{target['name']}", runtimes=csv_list(args.runtimes),
                          threads=csv_list(args.threads, int), protocol=Protocol.named(args.protocol), **variants)
            rows += bench_rows(res, label, target["name"])
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    cols = [c for c in ("model", "target", "runtime", "threads", "mode", "precision", "batch", "gmacs_per_s", "p50_ms",
                        "p90_ms", "rtf", "realtime", "peak_device_mib", "busy", "how") if c in df]
    print(df[cols].to_string(index=False))
    print(f"wrote {args.out}")
    return 0

def cmd_calibrate(args) -> int:
    from hwkd.hw.predict import calibrate, partial_path, save_calibration
    from hwkd.hw.targets import is_local, load_target
    target = load_target(args.target)
    device = None
    if not is_local(target):
        from hwkd.hw.remote import Device
        device = Device(target)
    runtimes = [r for r in (csv_list(args.runtimes) or target["runtimes"]) if r in ("onnxruntime", "openvino")]
    if not runtimes:
        raise HwkdError(f"target {target['name']} has no runtime the predictor covers",
                        "calibrate with --runtimes onnxruntime or openvino")
    for rt in runtimes:
        for th in csv_list(args.threads, int) or target["threads"]:
            print(f"hwkd calibrate: {target['name']} {rt} {th} thread(s)")
            calib = calibrate(rt, th, device=device, progress=print, partial=partial_path(target["name"], rt, th))
            path = save_calibration(calib, target["name"])
            print(f"  {len(calib['table_ms'])} blocks + {len(calib['anchors'])} anchors in {calib['seconds']} s "
                  f"-> {path}")
    return 0
