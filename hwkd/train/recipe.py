"""The one training recipe: `hwkd train`, `hwkd distill`, compare cells and search trials all call `train_model`.

What it does, in order (every fix to how hwkd trains a network lands here once):
1. refuses impossible budgets (`check_budget`);
2. data: the given dataset or the embedded corpus (built first if missing); training items are mixed on the
   fly from the corpus's own sources when the dataset is a set of an hwkd corpus (`mixing="auto"`, see
   hwkd.data.mixing), else the dataset's static pairs; val is always the fixed clips;
3. the model: seeded, identity-started (hwkd.models.dpdcrn.DPDCRN.identity_start), or the weights of `init`;
4. the objective: plain SE training, or KD from the teacher with λ balanced on the run's first batches
   (hwkd.train.objective) unless λ is given; the λ record is kept in RUN/kd_weight.json (a resumed run reads it
   back) and in the checkpoints' meta;
5. the trainer (warm-up over a fraction of the planned steps, then cosine; exact resume), in one process or,
   with `workers` > 1, in that many data-parallel processes (this one is worker 0; see hwkd.train.trainer).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from hwkd import SAMPLE_RATE
from hwkd.audio.io import write_text_atomic
from hwkd.errors import HwkdError
from hwkd.kd import uses_teacher
from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
from hwkd.train.shared import RNG_LOCK, heavy_turn, place
from hwkd.train.trainer import TrainConfig, check_budget, check_objective, epoch_order, stack_batch, train

BALANCE_BATCHES = 2       # batches of the run's first epoch on which a supernet's λ is balanced (mean-2)
# how λ is balanced (hwkd.train.objective): rule -> (batches of the run's first epoch, statistic of the per-batch
# gradient norms). Per-batch ‖∇L_SE‖ at the identity start is heavy-tailed — most batches 0.6–1.8, one in five
# 4–13, driven by a single high-SNR item — so the mean of 2 batches set λ ×5.1 apart across 4 seeds of one student
# and scheme; the median of 8, ×2.0, what is left being the KD term's own scale at each seed's initial weights
# (README "KD weights"; benchmarks/results/balance_noise.json)
BALANCE_RULES = {"mean-2": (2, "mean"), "median-8": (8, "median")}
BALANCE_RULE = "median-8"           # the default since 2026-12-04 (mean-2 before: recorded runs keep theirs)


def check_lam(lam: float | None, what: str = "--lam") -> None:
    """A KD weight given by hand must be a finite number ≥ 0 (None: balanced); one line naming it otherwise."""
    if lam is not None and not (math.isfinite(lam) and lam >= 0):
        raise HwkdError(f"{what} {lam}: not a KD weight", "give a finite number of 0 or more, or leave it out to "
                        "balance it on the first batches")


@dataclass
class KDSpec:
    scheme: str = "none"                 # "none" = plain SE training (hwkd.kd.baselines.NoKD)
    teacher: DPDCRN | None = None
    lam: float | None = None             # None: balanced on the first batches (KD_GRAD_RATIO)
    options: dict | None = None          # scheme options (e.g. fusion_mid for I²SRF-TFCKD)
    ratio: float | None = None           # target λ·‖∇L_KD‖ / ‖∇L_SE‖ of the balancing (default KD_GRAD_RATIO)
    balance: str | None = None           # the balancing rule (BALANCE_RULES; default BALANCE_RULE)


def mix_version_of(run: str | Path, asked: int | None = None) -> int:
    """The mixing version a run in `run` uses: the one its checkpoint recorded (a run from before versions mixed
    with version 1), so a resumed run sees the data it started with; for a new run `asked`, else the current
    one. Asking a resumed run for another version is refused."""
    from hwkd.data import MIX_VERSION, MIX_VERSIONS
    if asked is not None and asked not in MIX_VERSIONS:
        raise HwkdError(f"--mixing-version {asked}", f"use one of {', '.join(map(str, MIX_VERSIONS))}")
    last = Path(run) / "last.pt"
    if not last.is_file():
        return asked or MIX_VERSION
    from hwkd.models.checkpoint import read_checkpoint
    meta = read_checkpoint(last).get("meta") or {}
    if "mixing_version" in meta:
        have = meta["mixing_version"]             # None: a run on static pairs, where no version applies
    else:                                         # a run from before versions: mixed on the fly with version 1
        have = 1 if meta.get("train_data") == "on-the-fly mixing" or "supernet" in meta else None
    if have is None:
        return asked or MIX_VERSION
    if asked is not None and asked != have:
        raise HwkdError(f"{run} was trained with mixing version {have}; --mixing-version {asked} would change its "
                        "data mid-run", f"resume it with --mixing-version {have} (or without the flag), or "
                        "choose another --out")
    return have


def training_set(data: str | Path, split: str, segment_s: float, channels: int, seed: int, mixing: str = "auto",
                 mix_version: int | None = None):
    """On-the-fly mixtures (mixing "auto" or "on") for a set of an hwkd corpus, or for a real dataset whose split
    ships its noise separately (DATA/SPLIT/noise/ beside noisy/ and clean/, DNS style); else the static pairs.
    `mix_version`: the on-the-fly mixing version (hwkd.data.mixing; default: the current one)."""
    from hwkd.data import MIX_VERSION
    from hwkd.data.datasets import SpeechPairs
    from hwkd.data.mixing import FolderMix, OnTheFlyMix, corpus_of, noise_folder
    if mixing not in ("auto", "on", "off"):
        raise HwkdError(f"--mixing {mixing!r}", "use auto, on or off")
    noise = noise_folder(data, split) if mixing != "off" else None
    if mixing == "on" and corpus_of(data) is None and noise is None:
        raise HwkdError(f"--mixing on: {data} is not a set of an hwkd corpus and its {split} split ships no "
                        f"{split}/noise/ folder", "use --mixing auto (static pairs for real datasets), the embedded "
                        "corpus, or put the split's noise files in a noise/ folder beside clean/")
    if mixing != "off" and corpus_of(data) is not None:
        ds = OnTheFlyMix(data, split=split, segment_s=segment_s, seed=seed, version=mix_version or MIX_VERSION)
    elif noise is not None:
        ds = FolderMix(data, split, segment_s=segment_s, seed=seed, version=mix_version or MIX_VERSION)
    else:
        return SpeechPairs(data, split=split, mode="segment", segment_s=segment_s, channels=channels, seed=seed)
    if ds.channels != channels:
        raise HwkdError(f"{data} holds {ds.channels}-channel input for on-the-fly mixing, expected {channels}",
                        "choose the matching dataset or model input channels (or --mixing off)")
    return ds


def first_batches(train_set, cfg: TrainConfig, n: int, device: str) -> list[dict]:
    """The first n batches the trainer will see in epoch 0 (same order and items)."""
    order = epoch_order(len(train_set), cfg.seed, 0)
    train_set.set_epoch(0)
    out = []
    for k in range(min(n, len(train_set) // cfg.batch_size)):
        out.append(stack_batch([train_set[i] for i in order[k * cfg.batch_size:(k + 1) * cfg.batch_size]], device))
    return out


def make_objective(model: DPDCRN, kd: KDSpec, cfg: TrainConfig, train_set, run: Path | None):
    """None for plain SE training, else a KDObjective with its λ fixed, read back from the run, or balanced.
    With data-parallel workers the objective sees each worker's share of the batch (batch / workers), so a
    scheme that relates the items of a batch (I²SRF-TFCKD's batch stream) relates those of the share."""
    if not uses_teacher(kd.scheme):
        return None
    check_lam(kd.lam)
    if cfg.workers > 1:
        from dataclasses import replace
        cfg = replace(cfg, batch_size=cfg.batch_size // cfg.workers, workers=1)
    from hwkd.models.enhancer import Enhancer
    from hwkd.train.objective import KDObjective
    if kd.teacher is None:
        raise HwkdError(f"KD scheme {kd.scheme} needs a teacher", "pass --teacher or use the embedded teacher")
    with heavy_turn():          # (its teacher forward for the taps' shapes: one at a time in a group)
        obj = KDObjective(kd.teacher, model, kd.scheme, cfg.batch_size, int(round(cfg.segment_s * SAMPLE_RATE)),
                          lam=kd.lam, **(kd.options or {}))
    if run is not None and (run / "last.pt").is_file():     # refused before anything in the run is rewritten
        from hwkd.models.checkpoint import read_checkpoint
        check_objective(read_checkpoint(run / "last.pt"), run / "last.pt", kd.scheme)
    saved = run / "kd_weight.json" if run is not None else None
    options = kd.options or {}
    record = json.loads(saved.read_text()) if saved is not None and saved.is_file() else None
    if record is not None and (record.get("scheme"), record.get("options", options)) != (kd.scheme, options):
        if (run / "last.pt").is_file():
            was = record.get("scheme") + (f" {record['options']}" if record.get("options") else "")
            raise HwkdError(f"{run} was distilled with {was}, not {kd.scheme}" + (f" {options}" if options else ""),
                            "resume with the same --kd and options, or choose another --out")
        record = None                     # left by a start that never reached a checkpoint: balance afresh
    if kd.lam is None:
        if record is not None:
            obj.lam_record = record
            obj.lam = float(record["lam"])
        else:
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            enh = Enhancer(model).to(cfg.device)
            place(obj.teacher, cfg.device)      # (moved only when elsewhere: threads of a group share it)
            obj.distiller.to(cfg.device)
            from hwkd.train.objective import KD_GRAD_RATIO
            rule = kd.balance or BALANCE_RULE
            if rule not in BALANCE_RULES:
                raise HwkdError(f"KD-weight balancing rule {rule!r}", f"use one of {', '.join(BALANCE_RULES)}")
            n, statistic = BALANCE_RULES[rule]
            batches = first_batches(train_set, cfg, n, cfg.device)
            if not batches:
                raise HwkdError(f"the training set has {len(train_set)} segments, fewer than one batch of "
                                f"{cfg.batch_size}", "use a smaller --batch-size or more data")
            with heavy_turn():
                obj.balance(enh, batches, ratio=kd.ratio if kd.ratio is not None else KD_GRAD_RATIO,
                            statistic=statistic)
                obj.lam_record["balance"] = rule
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(saved, json.dumps({**obj.lam_record, "scheme": kd.scheme, "options": options}, indent=1))
    return obj


def plan_steps(steps: int, per_epoch: int) -> dict:
    """A budget of `steps` optimizer steps as the trainer's epochs and per-epoch cap: the fewest epochs of at most
    one pass over the training set (`per_epoch` batches) each, equal in length, together at least `steps` (at
    most epochs - 1 more). An epoch cap alone silently stopped a budget at one pass (150 steps of batch 8 over
    the default corpus's 2-s segments), whatever was asked."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"a step budget is a whole number of 1 or more, got {steps!r}")
    if per_epoch < 1:
        raise ValueError(f"the training set holds {per_epoch} batches: fewer than one")
    epochs = -(-steps // per_epoch)
    return {"epochs": epochs, "max_steps_per_epoch": -(-steps // epochs)}


def train_model(cfg: DPDCRNConfig, out: str | os.PathLike, tcfg: TrainConfig, data: str | Path | None = None,
                kd: KDSpec | None = None, init: str | Path | dict | None = None, train_split: str = "train",
                val_split: str = "val", mixing: str = "auto", meta: dict | None = None,
                progress: bool = True, mix_version: int | None = None, steps: int | None = None) -> dict:
    """Train (or resume) one network into `out`; returns the trainer's summary plus the data and λ used.
    `mix_version`: the on-the-fly mixing version of a new run (hwkd.data.mixing; default the current one).
    `steps`: a budget of optimizer steps, in place of tcfg's epochs and per-epoch cap (see plan_steps)."""
    from dataclasses import replace

    from hwkd.data.datasets import SpeechPairs
    check_budget(tcfg)
    kd = kd or KDSpec()
    if data is None:
        from hwkd.data.synth import default_dataset
        data = default_dataset(cfg.in_channels, progress=progress)
    mix_version = mix_version_of(out, mix_version)
    train_set = training_set(data, train_split, tcfg.segment_s, cfg.in_channels, tcfg.seed, mixing, mix_version)
    if steps is not None:
        tcfg = replace(tcfg, **plan_steps(steps, len(train_set) // tcfg.batch_size))
    val_set = SpeechPairs(data, split=val_split, mode="utterance", channels=cfg.in_channels, limit=tcfg.val_clips)
    run = Path(out)
    # a run started in a thread beside others (hwkd compare --group) draws its weights alone: torch's generator is
    # global (the KD objective's fusion and calibration weights too; its λ balancing draws nothing)
    with RNG_LOCK:
        torch.manual_seed(tcfg.seed)
        model = DPDCRN(cfg)
        if init is not None:
            _load_init(model, init)
        objective = make_objective(model, kd, tcfg, train_set, run)
    from hwkd.data.mixing import Mixtures
    on_the_fly = isinstance(train_set, Mixtures)
    info = {"data": str(data), "train_split": train_split, "val_split": val_split,
            "train_data": "on-the-fly mixing" if on_the_fly else "static pairs",
            "mixing_version": getattr(train_set, "version", None), "kd": kd.scheme,
            **({"kd_weight": objective.lam_record} if objective is not None else {}), **(meta or {})}
    if tcfg.workers == 1:
        res = train(model, train_set, val_set, run, tcfg, objective=objective, progress=progress, meta=info)
    else:
        res = _train_parallel(model, train_set, val_set, run, tcfg, objective, progress, info,
                              dict(cfg=cfg, out=str(out), tcfg=tcfg, data=str(data), kd=kd, init=init,
                                   train_split=train_split, val_split=val_split, mixing=mixing, meta=meta,
                                   mix_version=mix_version))
    return {**res, **info}


def _threads_per_worker(tcfg: TrainConfig) -> int:
    return max(1, (tcfg.threads or os.cpu_count() or 1) // tcfg.workers)


def _train_parallel(model, train_set, val_set, run: Path, tcfg: TrainConfig, objective, progress: bool, info: dict,
                    args: dict) -> dict:
    """This process is worker 0; workers 1.. are spawned processes that rebuild the same run from `args` (the
    λ record is already in RUN/kd_weight.json, so they read it back instead of balancing again)."""
    import multiprocessing as mp
    import socket
    from dataclasses import replace
    from datetime import timedelta

    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tcfg_w = replace(tcfg, threads=_threads_per_worker(tcfg))
    args = {**args, "tcfg": tcfg_w}
    threads_before = torch.get_num_threads()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(rank, tcfg.workers, port, os.getpid(), args), daemon=True)
             for rank in range(1, tcfg.workers)]
    for p in procs:
        p.start()
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=tcfg.workers,
                                timeout=timedelta(minutes=30))
        try:
            res = train(model, train_set, val_set, run, tcfg_w, objective=objective, progress=progress, meta=info)
        except RuntimeError:               # a worker that died breaks the collective: name it, not gloo's socket
            dead = [f"worker {k + 1} (exit {p.exitcode})" for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead:
                raise HwkdError(f"data-parallel training in {run}: {', '.join(dead)} failed",
                                "see the worker's error above; rerun the same command to resume from the last "
                                "checkpoint, or use --workers 1") from None
            raise
        finally:
            dist.destroy_process_group()
        for p in procs:
            p.join(timeout=120)
        return res
    finally:
        torch.set_num_threads(threads_before)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


def _worker(rank: int, world: int, port: int, parent: int, args: dict) -> None:
    """A spawned data-parallel worker: the same run, built the same way, stepping its share of each batch."""
    import signal
    from datetime import timedelta

    import torch.distributed as dist

    from hwkd.sysinfo import die_with_parent
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is worker 0's to handle; this one dies with it
    # the group first: a failure below then breaks worker 0's first collective at once (the socket closes),
    # where a worker that died before joining would leave worker 0 waiting for it until the timeout
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=30))
    if os.environ.get("HWKD_FAULT_WORKER") == str(rank):   # tests: a worker that fails while building its run
        raise RuntimeError("HWKD_FAULT_WORKER: this worker fails on purpose")
    tcfg = args["tcfg"]
    data, kd = args["data"], args["kd"]
    train_set = training_set(data, args["train_split"], tcfg.segment_s, args["cfg"].in_channels, tcfg.seed,
                             args["mixing"], args["mix_version"])
    from hwkd.data.datasets import SpeechPairs
    val_set = SpeechPairs(data, split=args["val_split"], mode="utterance", channels=args["cfg"].in_channels,
                          limit=tcfg.val_clips)
    torch.manual_seed(tcfg.seed)
    model = DPDCRN(args["cfg"])
    if args["init"] is not None:
        _load_init(model, args["init"])
    run = Path(args["out"])
    objective = make_objective(model, kd, tcfg, train_set, None) if not uses_teacher(kd.scheme) or kd.lam is not None \
        else _read_objective(model, kd, tcfg, train_set, run)
    try:
        train(model, train_set, val_set, run, tcfg, objective=objective, progress=False, rank=rank)
    finally:
        dist.destroy_process_group()


def _read_objective(model, kd: KDSpec, tcfg: TrainConfig, train_set, run: Path):
    """Worker 1..: the objective with the λ worker 0 balanced (RUN/kd_weight.json), never balanced again."""
    saved = run / "kd_weight.json"
    if not saved.is_file():
        raise HwkdError(f"{saved} is missing in a data-parallel worker", "rerun; worker 0 writes it first")
    record = json.loads(saved.read_text())
    from dataclasses import replace
    obj = make_objective(model, replace(kd, lam=float(record["lam"])), tcfg, train_set, None)
    obj.lam_record = record
    return obj


def _load_init(model: DPDCRN, init) -> None:
    if isinstance(init, dict):
        model.load_state_dict(init)
        return
    from hwkd.models.checkpoint import load_model
    if not Path(init).is_file():
        raise HwkdError(f"--init checkpoint {init} not found", "pass a .pt written by hwkd train or distill")
    src, _ = load_model(init)
    if src.cfg != model.cfg:
        raise HwkdError(f"--init checkpoint {init} has a different architecture ({src.cfg}) than the model "
                        f"being trained ({model.cfg})", "pass a checkpoint of the same preset or config")
    model.load_state_dict(src.state_dict())
