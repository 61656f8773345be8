"""`hwkd supernet train` and `hwkd supernet extract`: the weight-sharing supernet over a search space
(hwkd.models.supernet, hwkd.train.supernet)."""

from __future__ import annotations

import sys
from pathlib import Path

from hwkd.cli.common import POS_INT, default_dataset, formatter, nonneg_float, nonneg_int
from hwkd.errors import HwkdError
from hwkd.train.config import TrainConfig

# the student recipe of benchmarks/time_to_quality.py (batch 8 of 2-s segments at peak lr 2e-3): a KD step's
# cost grows with the segment (I²SRF-TFCKD relates every frame of the batch)
SEGMENT_S = 2.0
LR = 2e-3


def register(sub) -> None:
    s = sub.add_parser("supernet", formatter_class=formatter,
                       help="train a weight-sharing supernet over a search space once; extract sub-networks")
    ss = s.add_subparsers(dest="supernet_command", metavar="ACTION", title="actions", required=True)
    t = ss.add_parser("train", formatter_class=formatter,
                      help="sandwich training (largest, smallest, --random more per step), each sub-network "
                           "distilled from the teacher; resumes an interrupted run")
    t.add_argument("--space", default="wide", help="search space: a name in search_spaces/ or a YAML path "
                   "(default %(default)s)")
    t.add_argument("--out", type=Path, required=True,
                   help="run folder (supernet.json, kd_weight.json, best.pt / last.pt hold the largest network)")
    t.add_argument("--teacher", default=None, help="teacher checkpoint (default: the embedded teacher)")
    t.add_argument("--kd", default="i2srf-tfckd", help="KD scheme for every sub-network ('none' = no KD)")
    t.add_argument("--random", type=int, default=2, help="random sub-networks per step (default %(default)s)")
    t.add_argument("--inplace-kd", type=nonneg_float, default=0.0, metavar="W",
                   help="in-place distillation (BigNAS): every sub-network but the largest also learns the largest's "
                        "output, weighted W against its own loss (default 0: off)")
    t.add_argument("--data", type=Path, default=None, help="dataset (default: the embedded corpus)")
    t.add_argument("--epochs", type=POS_INT, default=TrainConfig.epochs, help="default %(default)s")
    t.add_argument("--max-steps-per-epoch", type=POS_INT, default=None)
    t.add_argument("--batch-size", type=POS_INT, default=TrainConfig.batch_size, help="default %(default)s")
    t.add_argument("--segment-s", type=float, default=SEGMENT_S, help="default %(default)s")
    t.add_argument("--lr", type=float, default=LR, help="peak learning rate (default %(default)s)")
    t.add_argument("--warmup-frac", type=float, default=TrainConfig.warmup_frac, help="default %(default)s")
    t.add_argument("--seed", type=int, default=TrainConfig.seed)
    t.add_argument("--device", default=TrainConfig.device, help="cpu or cuda (default %(default)s)")
    t.add_argument("--threads", type=POS_INT, default=None, help="torch threads (default: torch's choice)")
    t.add_argument("--loader-workers", type=nonneg_int, default=TrainConfig.loader_workers,
                   help="processes preparing the next batches while a step runs (default %(default)s: in the step)")
    t.add_argument("--ckpt-every", type=int, default=TrainConfig.ckpt_every, help="default %(default)s")
    t.add_argument("--val-pesq-clips", type=int, default=TrainConfig.val_pesq_clips, help="default %(default)s")
    t.set_defaults(func=cmd_train)

    e = ss.add_parser("extract", formatter_class=formatter,
                      help="write one sub-network with its inherited weights as a plain checkpoint")
    e.add_argument("run", type=Path, help="the supernet's run folder")
    e.add_argument("--model", required=True, help="the sub-network: a YAML config file or a preset")
    e.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    e.add_argument("--which", choices=("best", "last"), default="best", help="default %(default)s")
    e.set_defaults(func=cmd_extract)


def cmd_train(args) -> int:
    from hwkd.audio.io import check_output
    from hwkd.kd import uses_teacher
    from hwkd.models.checkpoint import load_model
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.search.space import load_space
    from hwkd.train.supernet import train_supernet
    from hwkd.train.trainer import check_budget
    if args.random < 0:
        raise HwkdError(f"--random {args.random}", "give 0 or more random sub-networks per step")
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       segment_s=args.segment_s, warmup_frac=args.warmup_frac, device=args.device,
                       threads=args.threads, ckpt_every=args.ckpt_every, max_steps_per_epoch=args.max_steps_per_epoch,
                       val_pesq_clips=args.val_pesq_clips, loader_workers=args.loader_workers)
    check_budget(tcfg)
    check_output(args.out, folder=True, what="--out")
    teacher = None
    if uses_teacher(args.kd):
        teacher, _ = load_model(args.teacher or embedded_teacher_path())   # mono first: every embedded hop
    space = load_space(args.space, teacher_hop=teacher.cfg.hop if teacher is not None else None)
    configs = space.configs()
    if teacher is not None and args.teacher is None and configs[0].in_channels != 1:
        teacher, _ = load_model(embedded_teacher_path(configs[0].in_channels))    # the Ambisonics teacher
    data = args.data or default_dataset(configs[0].in_channels, progress=not args.quiet)
    if not args.quiet:
        print(f"supernet over {space.name}: {len(configs)} sub-networks; KD {args.kd}; {2 + args.random} "
              f"sub-networks per step")
    res = train_supernet(configs, args.out, tcfg, teacher=teacher, scheme=args.kd, data=data, n_random=args.random,
                         inplace_kd=args.inplace_kd,
                         progress=not args.quiet, meta={"command": "hwkd " + " ".join(sys.argv[1:]),
                                                        "space": space.as_dict()})
    last = res["history"][-1] if res["history"] else {}
    print(f"done: val SI-SDR largest {last.get('val_si_sdr_db', float('nan')):.2f} dB, smallest "
          f"{last.get('val_si_sdr_db_min', float('nan')):.2f} dB; supernet in {args.out}")
    return 0


def cmd_extract(args) -> int:
    from hwkd.audio.io import check_output
    from hwkd.models.checkpoint import save_checkpoint
    from hwkd.models.registry import resolve_config
    from hwkd.train.supernet import load_supernet
    check_output(args.out, what="--out")
    sn, _ = load_supernet(args.run, args.which)
    cfg = resolve_config(args.model)
    try:
        sn.check(cfg)
    except ValueError as e:
        raise HwkdError(f"{args.model} is not a sub-network of the supernet in {args.run} ({e})",
                        f"choose a config within the largest network {sn.max_cfg}") from None
    save_checkpoint(args.out, sn.extract(cfg).eval(), meta={"supernet": str(args.run), "inherited": True})
    print(f"wrote {args.out}: {cfg}")
    return 0
