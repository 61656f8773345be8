"""`hwkd compare`: KD schemes x student sizes x seeds at one training budget (hwkd.experiments.compare), then
its report (hwkd.report.compare)."""

from __future__ import annotations

from pathlib import Path

from hwkd.cli.common import (
    POS_INT,
    STORAGE_HELP,
    csv_list,
    formatter,
    given_storage,
    nonneg_float,
    nonneg_int,
    storage_url,
)
from hwkd.errors import HwkdError
from hwkd.experiments.config import CompareConfig

CC = CompareConfig(schemes=[], students=[])      # the defaults --help shows


def register(sub) -> None:
    cp = sub.add_parser(
        "compare", formatter_class=formatter,
        help="KD schemes x student sizes x seeds at one training budget; report under reports/")
    cp.add_argument("--kd", default="none,response,fitnet,at,pkt-frame,semckd,reviewkd,i2srf-tfckd",
                    help="comma-separated schemes ('none' = no KD; default: all baselines and i2srf-tfckd)")
    cp.add_argument("--students", default="cpu-student-causal,cpu-student,paper-student",
                    help="comma-separated presets or config files (Ambisonics students use the foa set)")
    cp.add_argument("--seeds", type=POS_INT, default=CC.seeds, help="default %(default)s")
    cp.add_argument("--out", type=Path, required=True, help="run folder (cells, checkpoints); rerun to resume")
    cp.add_argument("--storage", type=storage_url, default=None,
                    help=STORAGE_HELP + "; else SQLite in the run folder. The same command with the same store on "
                         "several machines shares one matrix")
    cp.add_argument("--name", default=None, help="the matrix's study name in the store (default: the name of --out)")
    cp.add_argument("--report-dir", type=Path, default=None, help="default: reports/<name of --out>")
    cp.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: the embedded one)")
    cp.add_argument("--data", type=Path, default=None, help="mono dataset (default: the embedded corpus)")
    cp.add_argument("--data-foa", type=Path, default=None, help="Ambisonics dataset (default: the embedded corpus)")
    cp.add_argument("--epochs", type=int, default=CC.epochs, help="default %(default)s")
    cp.add_argument("--batch-size", type=int, default=CC.batch_size, help="default %(default)s")
    cp.add_argument("--segment-s", type=float, default=CC.segment_s, help="default %(default)s")
    cp.add_argument("--lr", type=float, default=CC.lr, help="default %(default)s")
    cp.add_argument("--lam", type=nonneg_float, default=None,
                    help="KD weight λ for every scheme (default: balanced per cell on its first batches)")
    cp.add_argument("--kd-ratios", default=None,
                    help="tune each KD scheme's weight on val: comma-separated target ratios λ·‖∇L_KD‖/‖∇L_SE‖ "
                         "(balanced default 0.5); one cell per ratio on a tuning seed, then every seed at the best "
                         "on val")
    cp.add_argument("--tune-on", default=None, metavar="STUDENT",
                    help="train the --kd-ratios grid on this student alone and use its choice for every student "
                         "(default: each student tuned on its own grid)")
    cp.add_argument("--kd-ratio", default=None, metavar="R | SCHEME=R,...",
                    help="balance KD schemes' weights at a fixed target ratio instead of tuning it: R for every KD "
                         "scheme, or per scheme (e.g. what a finished matrix's --kd-ratios grid chose)")
    cp.add_argument("--max-steps-per-epoch", type=int, default=None)
    cp.add_argument("--val-pesq-clips", type=int, default=CC.val_pesq_clips, help="default %(default)s")
    cp.add_argument("--eval-split", default=CC.eval_split, help="default %(default)s")
    cp.add_argument("--eval-limit", type=POS_INT, default=None,
                    help="only the first N utterances of the evaluation split and of the out-of-domain split")
    cp.add_argument("--threads", type=POS_INT, default=None,
                    help="intra-op threads per cell (default: cores / workers)")
    cp.add_argument("--workers", type=int, default=1,
                    help="cells trained side by side, in as many processes (default 1); the same command "
                         "started again elsewhere on the run folder shares the cells out too")
    cp.add_argument("--group", type=POS_INT, default=1,
                    help="per worker, up to N cells that see the same batches (same seed) trained side by side in "
                         "threads of its process, the frozen teacher's forward computed once per batch for all of "
                         "them; each cell's result is what it gets alone (default 1: one cell at a time)")
    cp.add_argument("--device", default="cpu",
                    help="where the cells train: cpu, cuda or cuda:N (default %(default)s; --workers processes share "
                         "one GPU; every cell records its device, and the evaluation runs on the CPU)")
    cp.add_argument("--clips", type=nonneg_int, default=1,
                    help="evaluation clips each scheme's seed-0 student enhances to listen to in index.html "
                         "(default 1)")
    cp.add_argument("--report-only", action="store_true",
                    help="train nothing: report the finished cells (e.g. of a comparison still running)")
    cp.set_defaults(func=cmd_compare)


def _ratios(text: str | None) -> list | None:
    if text is None:
        return None
    try:
        return [float(x) for x in csv_list(text) or []]
    except ValueError:
        raise HwkdError(f"--kd-ratios {text}: not a list of numbers", "give e.g. --kd-ratios 0.25,0.5,1") from None


def fixed_ratios(text: str | None, schemes: list) -> dict | None:
    """--kd-ratio: "R" (every KD scheme of `schemes`) or "SCHEME=R,..." -> {scheme: ratio}."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return {sc: float(text) for sc in schemes if sc != "none"}
        pairs = [item.split("=", 1) for item in csv_list(text) or []]
        return {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise HwkdError(f"--kd-ratio {text}: not a ratio or a list of SCHEME=RATIO",
                        "give e.g. --kd-ratio 0.25 or --kd-ratio i2srf-tfckd=0.25,fitnet=0.5") from None


def cmd_compare(args) -> int:
    from hwkd.experiments.compare import run_compare, run_compare_parallel, student_label, teacher_reference
    from hwkd.report.compare import report
    cc = CompareConfig(schemes=csv_list(args.kd), students=csv_list(args.students), seeds=args.seeds,
                       epochs=args.epochs, batch_size=args.batch_size, segment_s=args.segment_s, lr=args.lr,
                       lam=args.lam, max_steps_per_epoch=args.max_steps_per_epoch, val_pesq_clips=args.val_pesq_clips,
                       eval_split=args.eval_split, eval_limit=args.eval_limit, threads=args.threads,
                       kd_ratios=_ratios(args.kd_ratios), kd_ratio=fixed_ratios(args.kd_ratio, csv_list(args.kd)),
                       tune_on=student_label(args.tune_on) if args.tune_on else None)
    if cc.seeds < 1 or not cc.schemes or not cc.students:
        raise HwkdError("hwkd compare needs at least one scheme, one student and one seed", "see --help")
    data = {k: v for k, v in ((1, args.data), (4, args.data_foa)) if v is not None}
    teacher = args.teacher      # None: the embedded teacher for each student's input channels
    if not args.report_only:
        from hwkd.train.trainer import check_device
        check_device(args.device)
    if args.workers < 1:
        raise HwkdError(f"--workers {args.workers}: needs at least 1", "give --workers 1 or more")
    if not args.report_only:                    # a report of a read-only run folder writes nothing there
        from hwkd.audio.io import check_output
        check_output(args.out, folder=True, what="--out")
    storage, given_from = given_storage(args)
    if storage:
        from hwkd import store
        print(f"hwkd compare: store {store.redact(storage)} (from {given_from}), matrix "
              f"{args.name or args.out.resolve().name}")
    if args.workers > 1 and not args.report_only:
        results = run_compare_parallel(args.out, cc, teacher, args.workers, data=data, progress=not args.quiet,
                                       storage=storage, name=args.name, group=args.group, device=args.device)
    else:
        results = run_compare(args.out, cc, teacher, data=data, progress=not args.quiet,
                              train_missing=not args.report_only, storage=storage, name=args.name, group=args.group,
                              device=args.device)
    rdir = args.report_dir or Path("reports") / args.out.resolve().name
    teachers = teacher_reference(args.out, cc, teacher, data)     # the top of the teacher-student gap, scored once
    report(results, rdir, cc, cells_dir=args.out / "cells", data=data, clips=args.clips, teachers=teachers)
    print((rdir / "table.md").read_text())
    print(f"report in {rdir} (index.html, table.md, table.csv, summary.json, quality_vs_size.png, gain_vs_size.png)")
    return 0
