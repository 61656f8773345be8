"""`hwkd train`, `hwkd distill`, `hwkd evaluate` and `hwkd enhance`: one training recipe (hwkd.train.recipe), a
split's noisy-vs-enhanced table, one file enhanced."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hwkd import SAMPLE_RATE
from hwkd.cli.common import POS_INT, default_dataset, formatter, log, nonneg_float, nonneg_int
from hwkd.data import MIX_VERSION, MIX_VERSIONS
from hwkd.errors import HwkdError
from hwkd.train.config import TrainConfig


def register(sub) -> None:
    t = sub.add_parser(
        "train", formatter_class=formatter,
        help="train a DPDCRN (preset or config file) for speech enhancement; resumes an interrupted run")
    t.add_argument("--model", required=True, help="a preset (paper-teacher, cpu-student, ...) or a YAML config file")
    add_training_args(t)

    k = sub.add_parser(
        "distill", formatter_class=formatter,
        help="train a student with a KD scheme from a teacher (default: the embedded teacher)")
    k.add_argument("--student", required=True, help="a preset or a YAML config file")
    k.add_argument("--teacher", default=None, help="teacher checkpoint (default: the embedded teacher)")
    k.add_argument("--kd", default="i2srf-tfckd", help="KD scheme (see hwkd.kd.KD_SCHEMES; 'none' = no KD)")
    k.add_argument("--lam", type=nonneg_float, default=None,
                   help="weight λ of the KD loss (default: balanced on the first 8 batches so that λ·|∇L_KD| is "
                        "half of |∇L_SE| on the student, each the median over the batches; recorded in "
                        "OUT/kd_weight.json)")
    add_training_args(k)

    e = sub.add_parser(
        "evaluate", formatter_class=formatter,
        help="enhance a dataset split with a checkpoint; noisy vs enhanced table for every metric")
    e.add_argument("ckpt", type=Path, help="checkpoint (.pt) written by hwkd")
    e.add_argument("--data", type=Path, default=None,
                   help="dataset (default: the embedded corpus, mono or foa by the model)")
    e.add_argument("--split", default=None,
                   help="split to evaluate (default: test when the dataset has splits, else every pair; "
                        "'all' for every pair)")
    e.add_argument("--dnsmos", action="store_true", help="also DNSMOS (about 3 s per clip and core)")
    e.add_argument("--limit", type=POS_INT, default=None, help="only the first N utterances")
    e.add_argument("--save", type=Path, default=None, help="keep the enhanced WAVs in this folder")
    e.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    e.add_argument("--jobs", type=POS_INT, default=None, help="metric worker processes (default: all cores)")
    e.add_argument("--against", type=Path, default=None, metavar="CKPT",
                   help="a second checkpoint scored on the same utterances: the table adds its scores and the "
                        "paired difference (first - second) with a 95 %% CI per metric")

    n = sub.add_parser("enhance", formatter_class=formatter, help="enhance one file with a checkpoint")
    n.add_argument("ckpt", type=Path, help="checkpoint (.pt) written by hwkd")
    n.add_argument("input", type=Path, help="noisy WAV (mono, or 4-channel W,Y,Z,X for an Ambisonics model)")
    n.add_argument("output", type=Path, help="enhanced mono WAV (16 kHz, PCM16)")
    n.add_argument("--streaming", action="store_true",
                   help="run hop by hop with carried state (causal models only)")
    t.set_defaults(func=cmd_train)
    k.set_defaults(func=cmd_distill)
    e.set_defaults(func=cmd_evaluate)
    n.set_defaults(func=cmd_enhance)


def add_training_args(t) -> None:
    t.add_argument("--out", type=Path, required=True, help="run folder (best.pt, last.pt, history.jsonl)")
    t.add_argument("--data", type=Path, default=None,
                   help="dataset with train and val splits (default: the embedded corpus, mono or foa by the model)")
    t.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's weights (same architecture; fresh optimizer and schedule)")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="val")
    t.add_argument("--in-channels", type=POS_INT, default=None, help="override the model's input channels (1 or 4)")
    t.add_argument("--hop", type=POS_INT, default=None, help="override the model's STFT hop")
    t.add_argument("--mask-mode", choices=("reference", "filter-sum", "steered"), default=None,
                   help="override the model's output: one polar mask on channel 0 (reference, the spec's), or one per "
                        "input channel summed (filter-sum: a learned beamformer, multi-channel input only), or one on "
                        "a hypercardioid the network steers at the talker (steered: first-order Ambisonics only)")
    t.add_argument("--spatial-features", action="store_true", default=None,
                   help="multi-channel input: also feed each bin's cross-spectra with channel 0 (for Ambisonics the "
                        "normalised sound intensity, a direction-of-arrival cue)")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="default %(default)s")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="default %(default)s")
    t.add_argument("--segment-s", type=float, default=TrainConfig.segment_s,
                   help="training segment length in seconds (default %(default)s)")
    t.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (default %(default)s)")
    t.add_argument("--warmup-frac", type=float, default=TrainConfig.warmup_frac,
                   help="linear warm-up over this fraction of the planned steps, then cosine (default %(default)s)")
    t.add_argument("--mixing", choices=("auto", "on", "off"), default="auto",
                   help="training items mixed on the fly (auto: for an hwkd corpus set from its own sources, for "
                        "a real dataset whose train split has a noise/ folder beside clean/ from that split's clean "
                        "and noise files, DNS style; other datasets use their pairs) or the static pairs (off)")
    t.add_argument("--mixing-version", type=int, default=None, choices=MIX_VERSIONS,
                   help=f"the embedded corpus's on-the-fly mixing version of a new run (default {MIX_VERSION}, the "
                        "current one; 1 reproduces runs from before 2026-12-01; a resumed run keeps its own)")
    t.add_argument("--seed", type=int, default=TrainConfig.seed)
    t.add_argument("--device", default=TrainConfig.device, help="cpu or cuda (default %(default)s)")
    t.add_argument("--threads", type=POS_INT, default=None, help="torch threads (default: torch's choice)")
    t.add_argument("--workers", type=POS_INT, default=TrainConfig.workers,
                   help="data-parallel training processes on CPU; each takes batch/workers items of every batch "
                        "and --threads/workers threads (2 workers on 2 cores: ~1.2-1.3x the steps per second of 1)")
    t.add_argument("--loader-workers", type=nonneg_int, default=TrainConfig.loader_workers,
                   help="processes preparing the next batches while a step runs (default %(default)s: in the step); "
                        "for GPU runs, where on-the-fly mixing would take longer than the step")
    t.add_argument("--ckpt-every", type=int, default=TrainConfig.ckpt_every,
                   help="steps between mid-epoch checkpoints (default %(default)s)")
    t.add_argument("--max-steps-per-epoch", type=int, default=None)
    t.add_argument("--val-pesq-clips", type=int, default=TrainConfig.val_pesq_clips,
                   help="val clips scored with PESQ each epoch (default %(default)s)")


def run_training(args, cfg, kd=None) -> int:
    from hwkd.audio.io import check_output
    from hwkd.train.recipe import train_model
    from hwkd.train.trainer import check_budget
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       segment_s=args.segment_s, warmup_frac=args.warmup_frac,
                       device=args.device, threads=args.threads, ckpt_every=args.ckpt_every,
                       max_steps_per_epoch=args.max_steps_per_epoch, val_pesq_clips=args.val_pesq_clips,
                       workers=args.workers, loader_workers=args.loader_workers)
    check_budget(tcfg)                  # before the embedded corpus is built (minutes) for a run that cannot start
    check_output(args.out, folder=True, what="--out")
    data = args.data or default_dataset(cfg.in_channels, progress=not args.quiet)
    res = train_model(cfg, args.out, tcfg, data=data, kd=kd, init=args.init, train_split=args.train_split,
                      val_split=args.val_split, mixing=args.mixing, progress=not args.quiet,
                      meta={"command": "hwkd " + " ".join(sys.argv[1:])}, mix_version=args.mixing_version)
    lam = res.get("kd_weight", {}).get("lam")
    print(f"done: best val SI-SDR {res['best_val_si_sdr_db']:.2f} dB; training data: {res['train_data']}"
          + (f"; KD weight λ {lam:.4g} ({res['kd_weight']['rule']}"
             + (f", {res['kd_weight']['balance']}" if res["kd_weight"].get("balance") else "") + ")"
             if lam is not None else "")
          + f"; checkpoints in {args.out}")
    return 0

def cmd_train(args) -> int:
    from hwkd.models.registry import resolve_config
    return run_training(args, resolve_config(args.model, in_channels=args.in_channels, hop=args.hop,
                                             mask_mode=args.mask_mode, spatial_features=args.spatial_features))

def cmd_distill(args) -> int:
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.train.recipe import KDSpec
    own = resolve_config(args.student).in_channels
    channels = args.in_channels or own
    if args.teacher is None:            # the embedded teacher for the student's input channels
        teacher, _ = load_model(embedded_teacher_path(channels))
    else:
        teacher, _ = load_model(args.teacher)
        # an Ambisonics student keeps its 4 channels under a mono teacher (it teaches from the W channel); a
        # mono student of an Ambisonics teacher takes the teacher's 4 channels, and says so
        if not args.in_channels and not (own == 4 and teacher.cfg.in_channels == 1):
            channels = teacher.cfg.in_channels
            if channels != own:
                print(f"hwkd distill: student {args.student} takes the teacher's {channels} input channels "
                    f"(its own: {own}); --in-channels sets them")
    cfg = resolve_config(args.student, in_channels=channels, hop=args.hop or teacher.cfg.hop, mask_mode=args.mask_mode,
                         spatial_features=args.spatial_features)
    from hwkd.kd.base import uses_teacher
    from hwkd.train.objective import check_teacher
    if uses_teacher(args.kd):                  # before any corpus is built or folder made (unknown: one line)
        check_teacher(teacher.cfg, cfg, student=f"student {args.student}",
                      fix="give --in-channels / --hop that match the teacher, or another --teacher", schemes=(args.kd,))
    return run_training(args, cfg, KDSpec(args.kd, teacher, args.lam))

def cmd_evaluate(args) -> int:
    from hwkd.audio.io import check_output, write_text_atomic
    from hwkd.data.datasets import split_pairs
    from hwkd.data.layouts import scan
    from hwkd.metrics import BASE_METRICS, DNSMOS_METRICS
    from hwkd.models.checkpoint import load_model
    from hwkd.train.evaluate import evaluate_pairs
    if args.save:                                  # before any work: a bad path would lose the evaluation
        check_output(args.save, folder=True, what="--save")
    if args.out:
        check_output(args.out, what="--out")
    model, ck = load_model(args.ckpt)
    other, other_ck = load_model(args.against) if args.against else (None, None)
    if other is not None and other.cfg.in_channels != model.cfg.in_channels:
        raise HwkdError(f"--against {args.against} takes {other.cfg.in_channels} input channel(s), {args.ckpt} "
                        f"takes {model.cfg.in_channels}", "compare checkpoints made for the same input")
    data = args.data or default_dataset(model.cfg.in_channels, progress=not args.quiet)
    s = scan(data, channels=model.cfg.in_channels)
    split = args.split
    if split is None:                      # a plain paired folder has no splits: evaluate all of it
        split = "test" if any(x is not None for x in s.splits()) else "all"
    pairs = split_pairs(s, None if split == "all" else split, limit=args.limit)
    args.split = split
    if not pairs:
        raise HwkdError(f"nothing to evaluate in {data} split {split}", "check the split and the files")
    if args.save and any(q.parent.resolve() == args.save.resolve() for p in pairs for q in (p.noisy, p.clean)):
        raise HwkdError(f"--save {args.save} holds the dataset's own files (they would be replaced)",
                        "give another folder for the enhanced files")
    res = evaluate_pairs(model, pairs, jobs=args.jobs, dnsmos=args.dnsmos, save_dir=args.save,
                         progress=not args.quiet)
    metrics = BASE_METRICS + (DNSMOS_METRICS if args.dnsmos else ())
    if other is not None:
        from hwkd.train.evaluate import paired_difference
        res_b = evaluate_pairs(other, pairs, jobs=args.jobs, dnsmos=args.dnsmos, progress=not args.quiet,
                               noisy_rows=res["rows"]["noisy"])
        diff = paired_difference(res["rows"]["enhanced"], res_b["rows"]["enhanced"], metrics)
    sn, se = res["noisy"], res["enhanced"]
    print(f"{args.ckpt} on {data} [{args.split}], {len(pairs)} utterances (mean ± 95 % CI)")
    print(f"  {'metric':<12}{'noisy':>18}{'enhanced':>18}{'gain':>9}")
    for k in metrics:
        a, b = sn[k], se[k]
        if a["mean"] is None or b["mean"] is None:
            print(f"  {k:<12}{'-':>18}{'-':>18}")
            continue
        fa = f"{a['mean']:.3f} ± {a['ci95'] or 0:.3f}"
        fb = f"{b['mean']:.3f} ± {b['ci95'] or 0:.3f}"
        print(f"  {k:<12}{fa:>18}{fb:>18}{b['mean'] - a['mean']:>+9.3f}")
    print("  status noisy: " + ", ".join(f"{k} {v}" for k, v in sn["status_counts"].items())
          + "; enhanced: " + ", ".join(f"{k} {v}" for k, v in se["status_counts"].items()))
    for key, title in (("noise", "noise"), ("snr", "SNR"), ("rt60", "RT60")):
        table = res["by_condition"].get(key)
        if not table:
            continue
        print(f"  by {title} (gain: mean enhanced - mean noisy):")
        print(f"    {title:<16}{'n':>4}{'SI-SDR noisy':>14}{'SI-SDR gain':>13}{'PESQ-WB gain':>14}{'eSTOI gain':>12}")
        for value, row in table.items():
            cells = [f"{row[m]['gain']:+.3f}" if m in row else "-" for m in ("si_sdr_db", "pesq_wb", "estoi")]
            base = f"{row['si_sdr_db']['noisy']:.2f}" if "si_sdr_db" in row else "-"
            print(f"    {value:<16}{row['n']:>4}{base:>14}{cells[0]:>13}{cells[1]:>14}{cells[2]:>12}")
    if other is not None:
        print(f"  against {args.against} (paired over the utterances; difference = first - second):")
        print(f"    {'metric':<12}{'first':>10}{'second':>10}{'difference':>22}")
        for k in metrics:
            a, b, d = se[k]["mean"], res_b["enhanced"][k]["mean"], diff[k]
            if a is None or b is None or d["mean"] is None:
                print(f"    {k:<12}{'-':>10}{'-':>10}{'-':>22}")
                continue
            cell = f"{d['mean']:+.3f} ± {d['ci95'] or 0:.3f}"
            print(f"    {k:<12}{a:>10.3f}{b:>10.3f}{cell:>22}")
    if args.out:
        write_text_atomic(args.out, json.dumps({
            "checkpoint": str(args.ckpt), "model": ck["model"], "data": str(data), "split": args.split,
            "utterances": len(pairs), **res,
            **({"against": {"checkpoint": str(args.against), "model": other_ck["model"],
                            "enhanced": res_b["enhanced"], "difference": diff, "rows": res_b["rows"]["enhanced"]}}
               if other is not None else {})}, indent=2))
    return 0

def cmd_enhance(args) -> int:
    import os

    from hwkd.audio.io import audio_info, check_output, wav_truncation
    from hwkd.models.checkpoint import load_model
    from hwkd.models.enhancer import NONCAUSAL_CHUNK_S, Enhancer, enhance_file
    check_output(args.output)
    if args.output.is_file() and args.input.is_file() and os.path.samefile(args.output, args.input):
        raise HwkdError(f"the output {args.output} is the input file (the noisy audio would be replaced)",
                        "give another output path")
    model, _ = load_model(args.ckpt)
    if args.streaming and not model.cfg.causal:
        raise HwkdError(f"{args.ckpt} holds a non-causal model, which cannot run hop by hop",
                        "drop --streaming, or use a causal model (e.g. preset cpu-student-causal)")
    info = audio_info(args.input)
    cut = wav_truncation(args.input)
    if cut is not None:
        log.warning("%s is truncated: its header declares %d samples, the file holds %d; enhancing what is there",
                    args.input, *cut)
    if info.channels != model.cfg.in_channels:
        kind = "mono" if model.cfg.in_channels == 1 else f"{model.cfg.in_channels}-channel Ambisonics"
        raise HwkdError(f"{args.input} has {info.channels} channel(s) but the model expects {kind} input",
                        "give a matching file or a checkpoint trained for this input")
    if info.sample_rate != SAMPLE_RATE:
        log.warning("%s: resampling %d Hz to %d Hz", args.input, info.sample_rate, SAMPLE_RATE)
    from tqdm import tqdm
    with tqdm(total=round(info.duration_s * SAMPLE_RATE), unit="sample", unit_scale=True, desc="enhance",
              disable=True if args.quiet else None, dynamic_ncols=True) as bar:    # None: only on a terminal
        n = enhance_file(Enhancer(model).eval(), args.input, args.output, args.streaming, progress=bar.update)
    how = ("hop by hop" if args.streaming else "offline, in chunks with the streaming state carried"
           if model.cfg.causal else "offline" if n <= NONCAUSAL_CHUNK_S * SAMPLE_RATE else
           f"offline in overlapping {NONCAUSAL_CHUNK_S:g}-s windows, cross-faded: a non-causal model's "
           "approximation of whole-file processing")
    print(f"wrote {args.output} ({n / SAMPLE_RATE:.2f} s, {how})")
    return 0
