"""The `hwkd` command: parses arguments, calls the library, shows progress. No logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from hwkd.errors import HwkdError

log = logging.getLogger("hwkd")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) not in (3, 4) or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST[,OOD] clip counts such as 600,100,100,100, "
                                         f"got {text!r}")
    return parts


def _positive(kind=int, what: str = "a positive number"):
    """argparse type: a finite number > 0 (a 0 or negative count, size or limit is refused at parse time)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_POS_INT = _positive(int, "a whole number of 1 or more")
_POS_FLOAT = _positive(float, "a number above 0")


def _nonneg_int(text: str) -> int:
    """argparse type: a whole number >= 0 (a channel index)."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return v


def _storage(text: str) -> str:
    """argparse type: a database URL SQLAlchemy can read (the error does not repeat it: it may hold a password)."""
    from hwkd.search.store import parse
    try:
        parse(text)
    except HwkdError as e:
        raise argparse.ArgumentTypeError(f"not a database URL; {e.fix}") from None
    return text


_STORAGE_HELP = ("database URL shared by workers, e.g. postgresql+psycopg://user@host/db (default: $HWKD_STORAGE; "
                 "the password from PGPASSWORD or ~/.pgpass: a password in this flag is visible in ps)")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, width=120, max_help_position=24)


class _Parser(argparse.ArgumentParser):
    """An argument error is one line, like every other bad input: the error and where the options are (argparse
    printed the whole usage block above it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} — see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    from hwkd.data.synth import CorpusSpec
    p = _Parser(
        prog="hwkd",
        description="Hardware-aware knowledge distillation and NAS benchmarking for speech enhancement.",
        formatter_class=_formatter,
        epilog="Run `hwkd COMMAND --help` for the options of a command.")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    s = sub.add_parser(
        "search", formatter_class=_formatter,
        help="the main job: search students for a target; Pareto report, picks")
    s.add_argument("--target", default=None, help="a target name from targets/ (e.g. rpi4, cpu) or a YAML file")
    s.add_argument("--space", default="default", help="search space: a name in search_spaces/ or a YAML file")
    s.add_argument("--kd", default="i2srf-tfckd", help="KD scheme each candidate is distilled with ('none': no KD)")
    s.add_argument("--lam", type=float, default=None,
                   help="KD weight λ (default: balanced per candidate on its first batches)")
    s.add_argument("--controller", default="optuna",
                   help="optuna (TPE, multi-objective), random, nsga2, nni-random, nni-tpe, nni-evolution")
    s.add_argument("--trials", type=_POS_INT, default=None, help="stop after N trials in the whole search (default 40)")
    s.add_argument("--time-budget", type=_duration, default=None,
                   help="stop starting trials after this long on this machine, e.g. 900, 15m, 1h (default 15m)")
    s.add_argument("--max-latency-ms", type=_POS_FLOAT, default=None, help="constraint: per-hop latency on the target")
    s.add_argument("--no-realtime", action="store_true",
                   help="drop the default constraint that a hop is processed within the hop duration")
    s.add_argument("--steps", type=int, default=None, help="rung-0 distillation steps per candidate (default 40)")
    s.add_argument("--promote-steps", type=int, default=None,
                   help="further steps for candidates on the rung-0 front (multi-fidelity; 0 = off; default 60)")
    s.add_argument("--promote-after", type=int, default=None, help="finished trials before any promotion (default 3)")
    s.add_argument("--batch-size", type=int, default=None, help="default 4")
    s.add_argument("--val-pesq-clips", type=int, default=None, help="val clips scored with PESQ per trial (default 5)")
    s.add_argument("--segment-s", type=float, default=None, help="training segment length (default 1 s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--runtime", default=None, help="runtime the latency is taken on (default: the target's first)")
    s.add_argument("--threads", type=_POS_INT, default=None, help="threads on the target (default: the target's first)")
    s.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: the embedded teacher)")
    s.add_argument("--data", "--corpus", dest="data", type=Path, default=None,
                   help="dataset with train/val splits (default: the embedded corpus, built if needed)")
    s.add_argument("--name", default=None, help="run name (default: TARGET-DATE-TIME); folder $HWKD_HOME/runs/NAME")
    s.add_argument("--resume", default=None, metavar="RUN", help="continue a search (name or folder) with its settings")
    s.add_argument("--storage", type=_storage, default=None, help=_STORAGE_HELP + "; else SQLite in the run folder")
    s.add_argument("--trial-timeout", type=_duration, default=None, metavar="DURATION",
                   help="a trial process with no result after this long is hung: killed, failed and retried once, "
                        "e.g. 900, 30m (default: 10 min + 10 s per second of audio trained per rung)")
    s.add_argument("--no-report", action="store_true", help="do not write reports/NAME at the end")
    s.add_argument("--reports", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")
    s.add_argument("--jobs", type=_POS_INT, default=None, help="corpus-building processes (default: all cores)")

    r = sub.add_parser("report", formatter_class=_formatter,
                       help="HTML page, PNGs and CSV of a search's fronts under reports/RUN")
    r.add_argument("run", help="run name or folder")
    r.add_argument("--storage", type=_storage, default=None,
                   help="the database URL (default: $HWKD_STORAGE, else the run's own; a server's password from "
                        "PGPASSWORD or ~/.pgpass)")
    r.add_argument("--reports", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")

    pk = sub.add_parser("pick", formatter_class=_formatter,
                        help="export the best student within a latency limit, ready to deploy")
    pk.add_argument("run", help="run name or folder")
    pk.add_argument("--max-latency-ms", type=_POS_FLOAT, default=None, help="per-hop latency limit on the target")
    pk.add_argument("--target", default=None, help="the run's target (checked)")
    pk.add_argument("--out", type=Path, default=None, help="folder (default: picks/RUN-trialN)")
    pk.add_argument("--storage", type=_storage, default=None,
                    help="the database URL (default: $HWKD_STORAGE, else the run's own; a server's password from "
                         "PGPASSWORD or ~/.pgpass)")

    d = sub.add_parser(
        "data", formatter_class=_formatter,
        help="data synth: build the embedded corpus; data check PATH: validate a dataset")
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="subcommands")
    ds = dsub.add_parser(
        "synth", formatter_class=_formatter,
        help="build or resume the embedded default corpus (mono + Ambisonics)")
    ds.add_argument("--out", type=Path, default=None, help="corpus folder (default: $HWKD_HOME/corpus/default)")
    ds.add_argument("--seed", type=int, default=0)
    for set_name, label in (("mono", "mono"), ("foa", "4-channel Ambisonics")):
        default = CorpusSpec().sizes[set_name]
        ds.add_argument(f"--{set_name}", type=_sizes, default=default, metavar="TRAIN,VAL,TEST[,OOD]",
                        help=f"{label} clip counts (default {','.join(map(str, default))}; OOD: the "
                             "out-of-domain split, voices, noises and SNRs no other split has)")
    ds.add_argument("--clip-s", type=_POS_FLOAT, default=4.0, help="clip length in seconds (default 4)")
    ds.add_argument("--jobs", type=_POS_INT, default=None, help="worker processes (default: all cores)")
    dc = dsub.add_parser(
        "check", formatter_class=_formatter,
        help="recognise a dataset layout; report counts, hours, rates, problems")
    dc.add_argument("path", type=Path, help="dataset folder or CSV manifest")
    dc.add_argument("--channels", type=_POS_INT, default=None, help="expected input channel count")
    dc.add_argument("--mic", choices=("A", "B"), default="A", help="L3DAS23 microphone (default A)")
    dc.add_argument("--json", action="store_true", help="print the report as JSON")
    dc.add_argument("--headers-only", action="store_true",
                    help="read file headers only (fast; skips the NaN / truncated-file scan of every sample)")

    t = sub.add_parser(
        "train", formatter_class=_formatter,
        help="train a DPDCRN (preset or config file) for speech enhancement; resumes an interrupted run")
    t.add_argument("--model", required=True, help="a preset (paper-teacher, cpu-student, ...) or a YAML config file")
    _add_training_args(t)

    k = sub.add_parser(
        "distill", formatter_class=_formatter,
        help="train a student with a KD scheme from a teacher (default: the embedded teacher)")
    k.add_argument("--student", required=True, help="a preset or a YAML config file")
    k.add_argument("--teacher", default=None, help="teacher checkpoint (default: the embedded teacher)")
    k.add_argument("--kd", default="i2srf-tfckd", help="KD scheme (see hwkd.kd.KD_SCHEMES; 'none' = no KD)")
    k.add_argument("--lam", type=float, default=None,
                   help="weight λ of the KD loss (default: balanced on the first batches so that λ·|∇L_KD| is "
                        "half of |∇L_SE| on the student; recorded in OUT/kd_weight.json)")
    _add_training_args(k)

    cp = sub.add_parser(
        "compare", formatter_class=_formatter,
        help="KD schemes x student sizes x seeds at one training budget; report under reports/")
    cp.add_argument("--kd", default="none,response,fitnet,at,pkt-frame,semckd,reviewkd,i2srf-tfckd",
                    help="comma-separated schemes ('none' = no KD; default: all baselines and i2srf-tfckd)")
    cp.add_argument("--students", default="cpu-student-causal,cpu-student,paper-student",
                    help="comma-separated presets or config files (Ambisonics students use the foa set)")
    cp.add_argument("--seeds", type=_POS_INT, default=3)
    cp.add_argument("--out", type=Path, required=True, help="run folder (cells, checkpoints); rerun to resume")
    cp.add_argument("--report-dir", type=Path, default=None, help="default: reports/<name of --out>")
    cp.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: the embedded one)")
    cp.add_argument("--data", type=Path, default=None, help="mono dataset (default: the embedded corpus)")
    cp.add_argument("--data-foa", type=Path, default=None, help="Ambisonics dataset (default: the embedded corpus)")
    cp.add_argument("--epochs", type=int, default=1)
    cp.add_argument("--batch-size", type=int, default=8)
    cp.add_argument("--segment-s", type=float, default=2.0)
    cp.add_argument("--lr", type=float, default=2e-3)
    cp.add_argument("--lam", type=float, default=None,
                    help="KD weight λ for every scheme (default: balanced per cell on its first batches)")
    cp.add_argument("--max-steps-per-epoch", type=int, default=None)
    cp.add_argument("--val-pesq-clips", type=int, default=5)
    cp.add_argument("--eval-split", default="test")
    cp.add_argument("--eval-limit", type=_POS_INT, default=None, help="only the first N evaluation utterances")
    cp.add_argument("--threads", type=_POS_INT, default=None,
                    help="intra-op threads per cell (default: cores / workers)")
    cp.add_argument("--workers", type=int, default=1,
                    help="cells trained side by side, in as many processes (default 1); the same command "
                         "started again elsewhere on the run folder shares the cells out too")
    cp.add_argument("--report-only", action="store_true",
                    help="train nothing: report the finished cells (e.g. of a comparison still running)")

    e = sub.add_parser(
        "evaluate", formatter_class=_formatter,
        help="enhance a dataset split with a checkpoint; noisy vs enhanced table for every metric")
    e.add_argument("ckpt", type=Path, help="checkpoint (.pt) written by hwkd")
    e.add_argument("--data", type=Path, default=None,
                   help="dataset (default: the embedded corpus, mono or foa by the model)")
    e.add_argument("--split", default=None,
                   help="split to evaluate (default: test when the dataset has splits, else every pair; "
                        "'all' for every pair)")
    e.add_argument("--dnsmos", action="store_true", help="also DNSMOS (about 3 s per clip and core)")
    e.add_argument("--limit", type=_POS_INT, default=None, help="only the first N utterances")
    e.add_argument("--save", type=Path, default=None, help="keep the enhanced WAVs in this folder")
    e.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    e.add_argument("--jobs", type=_POS_INT, default=None, help="metric worker processes (default: all cores)")

    n = sub.add_parser("enhance", formatter_class=_formatter, help="enhance one file with a checkpoint")
    n.add_argument("ckpt", type=Path, help="checkpoint (.pt) written by hwkd")
    n.add_argument("input", type=Path, help="noisy WAV (mono, or 4-channel W,Y,Z,X for an Ambisonics model)")
    n.add_argument("output", type=Path, help="enhanced mono WAV (16 kHz, PCM16)")
    n.add_argument("--streaming", action="store_true",
                   help="run hop by hop with carried state (causal models only)")

    m = sub.add_parser(
        "metrics", formatter_class=_formatter,
        help="PESQ-WB, STOI, eSTOI, SI-SDR (+DNSMOS) of noisy or enhanced audio")
    m.add_argument("path", type=Path, help="dataset folder or CSV manifest")
    m.add_argument("--split", default=None, help="split to score (e.g. test, mono/test)")
    m.add_argument("--enhanced", type=Path, default=None,
                   help="folder of enhanced files named like the noisy ones (default: score the noisy input)")
    m.add_argument("--channel", type=_nonneg_int, default=0, help="input channel scored for multi-channel input "
                                                          "(default 0: W for Ambisonics)")
    m.add_argument("--dnsmos", action="store_true", help="also DNSMOS (about 0.75 s per clip and core)")
    m.add_argument("--limit", type=_POS_INT, default=None, help="score only the first N pairs")
    m.add_argument("--jobs", type=_POS_INT, default=None, help="worker processes (default: all cores)")
    m.add_argument("--out", type=Path, default=None, help="write per-clip CSV here and a .json summary beside it")

    pr = sub.add_parser(
        "profile", formatter_class=_formatter,
        help="params, MACs/s, export with parity and measured latency of one model on a target")
    pr.add_argument("model", help="a checkpoint (.pt), a preset (cpu-student, ...) or a model config file")
    pr.add_argument("--target", default="cpu", help="a target name from targets/ or a target YAML (default cpu)")
    _add_measure_args(pr)
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
        "calibrate", formatter_class=_formatter,
        help="run the latency predictor's micro-benchmarks on a target (here, or on its device over SSH)")
    c.add_argument("--target", required=True, help="a target name from targets/ or a target YAML")
    c.add_argument("--runtimes", default=None, help="comma-separated: onnxruntime, openvino (default: the target's)")
    c.add_argument("--threads", default=None, help="comma-separated thread counts (default: the target's)")

    b = sub.add_parser(
        "bench", formatter_class=_formatter,
        help="hardware lab table: models x targets x runtimes x threads into one CSV")
    b.add_argument("--models", required=True, help="comma-separated checkpoints, presets or config files")
    b.add_argument("--targets", default="cpu,openvino-cpu", help="comma-separated targets (default cpu,openvino-cpu)")
    _add_measure_args(b)
    b.add_argument("--out", type=Path, default=Path("bench.csv"), help="CSV to write (default bench.csv); a "
                                                                      "folder of exports is kept beside it")
    return p


def _add_measure_args(p) -> None:
    p.add_argument("--runtimes", default=None, help="comma-separated runtimes (default: the target's)")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: the target's)")
    p.add_argument("--protocol", default="default", choices=("quick", "default", "mlperf"),
                   help="quick: 10 warm-up + 60 runs / 0.3 s; default: 30 + 200 / 1 s; "
                        "mlperf: 100 + 1024 / 60 s (MLPerf single-stream)")


def _add_training_args(t) -> None:
    t.add_argument("--out", type=Path, required=True, help="run folder (best.pt, last.pt, history.jsonl)")
    t.add_argument("--data", type=Path, default=None,
                   help="dataset with train and val splits (default: the embedded corpus, mono or foa by the model)")
    t.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's weights (same architecture; fresh optimizer and schedule)")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="val")
    t.add_argument("--in-channels", type=_POS_INT, default=None, help="override the model's input channels (1 or 4)")
    t.add_argument("--hop", type=_POS_INT, default=None, help="override the model's STFT hop")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--segment-s", type=float, default=4.0, help="training segment length in seconds (default 4)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup-frac", type=float, default=0.1,
                   help="linear warm-up over this fraction of the planned steps, then cosine decay")
    t.add_argument("--mixing", choices=("auto", "on", "off"), default="auto",
                   help="training items mixed on the fly (auto: for an hwkd corpus set from its own sources, for "
                        "a real dataset whose train split has a noise/ folder beside clean/ from that split's clean "
                        "and noise files, DNS style; other datasets use their pairs) or the static pairs (off)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--threads", type=_POS_INT, default=None, help="torch threads (default: torch's choice)")
    t.add_argument("--workers", type=_POS_INT, default=1,
                   help="data-parallel training processes on CPU; each takes batch/workers items of every batch "
                        "and --threads/workers threads (2 workers on 2 cores: ~1.2-1.3x the steps per second of 1)")
    t.add_argument("--ckpt-every", type=int, default=50, help="steps between mid-epoch checkpoints")
    t.add_argument("--max-steps-per-epoch", type=int, default=None)
    t.add_argument("--val-pesq-clips", type=int, default=20, help="val clips scored with PESQ each epoch")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="hwkd: %(message)s", level=logging.INFO, stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "data":
            if args.data_command == "synth":
                return cmd_data_synth(args)
            if args.data_command == "check":
                return cmd_data_check(args)
            parser.parse_args(["data", "--help"])
        if args.command == "metrics":
            return cmd_metrics(args)
        if args.command == "search":
            return cmd_search(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "pick":
            return cmd_pick(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "distill":
            return cmd_distill(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "enhance":
            return cmd_enhance(args)
        if args.command == "profile":
            return cmd_profile(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "calibrate":
            return cmd_calibrate(args)
        if args.command == "compare":
            return cmd_compare(args)
    except HwkdError as exc:
        print(f"hwkd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.command in ("enhance", "metrics"):                 # one-shot, written at the end: nothing to resume
            print("hwkd: interrupted; no partial output was written (an existing one is unchanged) — rerun the "
                  "same command", file=sys.stderr)
        elif args.command == "evaluate":
            print("hwkd: interrupted; no table was written (files already saved with --save are complete) — rerun "
                  "the same command", file=sys.stderr)
        else:
            print("hwkd: interrupted; finished work is kept — rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def cmd_data_synth(args) -> int:
    from hwkd.audio.io import check_output
    from hwkd.data.synth import CorpusSpec, build_corpus
    from hwkd.paths import default_corpus_dir
    out = check_output(args.out or default_corpus_dir(), folder=True, what="--out")
    spec = CorpusSpec(seed=args.seed, clip_s=args.clip_s, sizes={"mono": args.mono, "foa": args.foa})
    res = build_corpus(out, spec, jobs=args.jobs, progress=not args.quiet)
    counts = ", ".join(f"{k} {v}" for k, v in res["counts"].items())
    print(f"corpus at {res['root']}: built {res['built']}, kept {res['skipped']} in {res['seconds']} s ({counts})")
    return 0


def cmd_data_check(args) -> int:
    from hwkd.data.layouts import check_samples, scan
    s = scan(args.path, channels=args.channels, mic=args.mic)
    if not args.headers_only:
        n = check_samples(s, progress=None if args.quiet or args.json else
                          lambda k, total: print(f"  read {k}/{total} files", file=sys.stderr))
        s.notes.append(f"every sample of {n} files read (NaN, infinite, truncated); --headers-only skips this")
    rows = s.summary()
    if args.json:
        print(json.dumps({"layout": s.layout, "root": str(s.root), "splits": rows, "notes": s.notes,
                          "problems": [{"path": p.path, "problem": p.message} for p in s.problems]}, indent=2))
    else:
        print(f"{s.root}: layout {s.layout}")
        hdr = f"{'split':<14}{'pairs':>7}{'hours':>9}  noisy rate/ch            clean rate/ch"
        print(hdr)
        for r in rows:
            nr = "/".join(f"{k}x{v}" for k, v in r["noisy_rates"].items())
            nc = "/".join(f"{k}ch x{v}" for k, v in r["noisy_channels"].items())
            cr = "/".join(f"{k}x{v}" for k, v in r["clean_rates"].items())
            cc = "/".join(f"{k}ch x{v}" for k, v in r["clean_channels"].items())
            print(f"{r['split']:<14}{r['pairs']:>7}{r['hours']:>9.3f}  {nr + ' ' + nc:<24} {cr} {cc}")
        for n in s.notes:
            print(f"note: {n}")
        if s.problems:
            print(f"{len(s.problems)} problem(s):")
            for p in s.problems:
                print(f"  {p}")
        else:
            print("no problems found")
    return 1 if s.problems else 0




def cmd_metrics(args) -> int:
    import csv

    from hwkd.audio.io import check_output, write_text_atomic
    from hwkd.data.datasets import select_pairs
    from hwkd.data.layouts import scan
    from hwkd.metrics import BASE_METRICS, DNSMOS_METRICS, score_pairs, summarize
    from hwkd.metrics.quality import load_channel_and_reference
    if args.out:                                   # before scoring: a bad path would lose the scores
        check_output(args.out, what="--out")
        check_output(args.out.with_suffix(".json"), what="--out's summary")
    s = scan(args.path)
    chosen = select_pairs(s, args.split)
    pairs = s.good_pairs(chosen)
    if len(pairs) < len(chosen):
        log.warning("%d pair(s) with problems are left out; run `hwkd data check %s` to see them",
                    len(chosen) - len(pairs), args.path)
    if args.limit:
        pairs = pairs[: args.limit]
    narrow = [p for p in pairs if s.info[p.noisy].channels <= args.channel]
    if narrow and not args.enhanced:
        raise HwkdError(f"--channel {args.channel}: {narrow[0].noisy} has {s.info[narrow[0].noisy].channels} "
                        f"channel(s) (channels count from 0)", "give a channel the noisy files have, e.g. --channel 0")
    if args.enhanced:
        if not args.enhanced.is_dir():
            raise HwkdError(f"enhanced folder not found: {args.enhanced}", "give the folder `hwkd enhance` wrote")
        jobs = [((args.enhanced / p.noisy.name, 0), p.clean, p.id) for p in pairs]
    else:
        jobs = [((p.noisy, args.channel), p.clean, p.id) for p in pairs]
    if not jobs:
        raise HwkdError(f"nothing to score in {args.path}", "check the split name and the files")
    rows = score_pairs(jobs, load_channel_and_reference, jobs=args.jobs, dnsmos=args.dnsmos, progress=not args.quiet)
    metrics = BASE_METRICS + (DNSMOS_METRICS if args.dnsmos else ())
    summ = summarize(rows, metrics)
    what = f"enhanced ({args.enhanced})" if args.enhanced else f"noisy input (channel {args.channel})"
    print(f"{args.path} {args.split or ''}: {what}, {len(rows)} clips")
    for k in metrics:
        v = summ[k]
        if v["mean"] is None:
            print(f"  {k:<12} -")
        else:
            ci = f" ± {v['ci95']:.3f}" if v["ci95"] is not None else ""
            print(f"  {k:<12} {v['mean']:8.3f}{ci}  (n={v['n']})")
    print("  status: " + ", ".join(f"{k} {v}" for k, v in summ["status_counts"].items()))
    if args.out:
        import io
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=["id", *metrics, "status"])
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(args.out, buf.getvalue())
        write_text_atomic(args.out.with_suffix(".json"), json.dumps(
            {"path": str(args.path), "split": args.split, "scored": what, "summary": summ}, indent=2))
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def _duration(text: str) -> float:
    t = text.strip().lower()
    try:
        for suffix, mult in (("h", 3600), ("min", 60), ("m", 60), ("s", 1)):
            if t.endswith(suffix):
                v = float(t[: -len(suffix)]) * mult
                break
        else:
            v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 900, 15m or 1h") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be above 0; write e.g. 900, 15m or 1h")
    return v


def _check_search_budget(sc) -> None:
    """A search whose trials cannot train is refused before it starts (one line naming the flag)."""
    from hwkd.train.trainer import TrainConfig, check_budget
    for ok, flag in ((sc.steps >= 1, f"--steps {sc.steps}"),
                     (sc.promote_steps >= 0, f"--promote-steps {sc.promote_steps}"),
                     (sc.promote_after >= 0, f"--promote-after {sc.promote_after}"),
                     (sc.lam is None or sc.lam >= 0, f"--lam {sc.lam}")):
        if not ok:
            raise HwkdError(f"{flag}: impossible training budget", "give a positive value (see hwkd search --help)")
    check_budget(TrainConfig(batch_size=sc.batch_size, lr=sc.lr, segment_s=sc.segment_s,
                             val_pesq_clips=sc.val_pesq_clips, max_steps_per_epoch=sc.steps))


def _given_storage(args) -> tuple[str | None, str]:
    """The store URL from --storage or $HWKD_STORAGE, and which; a password on the command line is warned about."""
    from hwkd.search import store
    if args.storage and store.has_password(args.storage):
        print(f"hwkd: warning: the password in --storage is visible to every user of this machine (ps) while hwkd "
              f"runs; pass the URL in ${store.STORAGE_ENV}, or the password by PGPASSWORD or ~/.pgpass",
              file=sys.stderr)
    return store.given_storage(args.storage)


def cmd_search(args) -> int:
    from datetime import datetime

    from hwkd.hw.targets import load_target
    from hwkd.search import store
    from hwkd.search.run import Search, SearchConfig, open_run, resolve_run
    given, given_from = _given_storage(args)
    if args.resume:
        run, settings = open_run(args.resume, given, given_from)
        sc = SearchConfig.from_dict(settings)
        if args.trial_timeout is not None:
            sc.trial_timeout_s = args.trial_timeout
        # the run's own SQLite file: None, as for a new run (one worker, a reproducible sampler seed)
        storage = None if settings["storage"] == store.sqlite_url(run / store.RUN_DB) else settings["storage"]
        from hwkd.models.teacher import embedded_teacher_path
        if args.data:
            sc.data = str(args.data)
        elif sc.data and not Path(sc.data).exists():      # a worker joining from another machine
            if Path(sc.data).parent.parts[-2:] != ("corpus", "default"):
                raise HwkdError(f"the dataset of search {run.name} ({sc.data}) is not on this machine",
                                "pass its local copy with --data PATH")
            sc.data = None                                # the embedded corpus is rebuilt identically here
        if sc.teacher and not Path(sc.teacher).is_file() and Path(sc.teacher).name == embedded_teacher_path().name:
            sc.teacher = None
        print(f"hwkd search: resuming {run.name} (target {sc.target}, {sc.controller}, {sc.kd})")
    else:
        if not args.target:
            raise HwkdError("hwkd search needs --target (or --resume RUN)", "e.g. hwkd search --target rpi4")
        target = load_target(args.target)
        name = args.name or f"{target['name']}-{datetime.now():%Y%m%d-%H%M%S}"
        run = resolve_run(name)
        storage = given
        defaults = SearchConfig()
        sc = SearchConfig(target=str(args.target), space=args.space, kd=args.kd, lam=args.lam,
                          controller=args.controller, seed=args.seed, max_latency_ms=args.max_latency_ms,
                          realtime=not args.no_realtime, runtime=args.runtime, threads=args.threads,
                          teacher=str(args.teacher) if args.teacher else None,
                          data=str(args.data) if args.data else None, trial_timeout_s=args.trial_timeout,
                          **{k: getattr(args, k) if getattr(args, k) is not None else getattr(defaults, k)
                             for k in ("trials", "steps", "promote_steps", "promote_after", "batch_size", "segment_s",
                                       "val_pesq_clips")},
                          time_budget_s=args.time_budget if args.time_budget is not None else defaults.time_budget_s)
        _check_search_budget(sc)
        if (run / "run.json").is_file():
            # a worker may rejoin its run's database server; any other store (a $HWKD_STORAGE set for other
            # runs included) would take the name over and rewrite the run's run.json
            old = json.loads((run / "run.json").read_text()).get("storage", "")
            if not storage or store.is_sqlite(old) or store.is_sqlite(storage) or not store.same_database(old, storage):
                raise HwkdError(f"a search named {name} exists ({run}, store {store.redact(old)})",
                                f"continue it with --resume {name}, or choose another --name")
        print(f"hwkd search --target {target['name']}: run {name} ({run})")
    if sc.data is None:
        print("hwkd search: embedded corpus (built on first use)")
    srch = Search(run, sc, storage=storage, progress=not args.quiet)
    if storage:
        print(f"hwkd search: store {store.redact(srch.storage_url)}")
    t = srch.target
    lat = (f"measured with {sc.runtime} ({sc.threads} thread(s))" if t["kind"] == "local"
           else f"{sc.runtime}, {sc.threads} thread(s); measured over SSH" if (t.get("ssh") or {}).get("host")
           else f"{sc.runtime}, {sc.threads} thread(s); predicted (no device named)")
    print(f"  space {srch.space.name} ({srch.space.size()} candidates), controller {sc.controller}, KD {sc.kd}, "
          f"teacher {Path(sc.teacher).name}; latency on {t['name']}: {lat}; limit {srch.cost_ref:g} ms per hop; "
          f"noisy val SI-SDR {srch.quality_ref:.2f} dB")
    trials = args.trials if args.resume and args.trials is not None else None
    budget = args.time_budget if args.resume and args.time_budget is not None else None
    try:
        with store.failures(srch.storage_url, f"finished trials are kept; when the database answers again, continue "
                                              f"with: hwkd search --resume {run}"):
            res = srch.loop(trials, budget)
    except KeyboardInterrupt:
        print(f"hwkd search: interrupted; finished trials are kept — continue with: hwkd search --resume {run}",
              file=sys.stderr)
        return 130
    retried = (f", {res['retried_after_timeout']} timed out and retried" if res["retried_after_timeout"] else "")
    print(f"hwkd search: stopped ({res['stop']}): {res['complete']} complete, {res['failed']} failed{retried}, "
          f"{res['duplicates']} duplicate proposals skipped, {res['elapsed_s']:.0f} s on this machine")
    if not args.no_report and res["complete"]:
        from hwkd.report.search import write_report
        _, settings = open_run(str(run), storage, given_from)
        out = args.reports / run.name
        summ = write_report(run, settings, out)
        print(f"report: {out / 'index.html'} (front: {len(summ['front'])} students, hypervolume "
              f"{summ['hypervolume']:.3f} dB·ms)")
        print(f"pick one: hwkd pick {run.name} --max-latency-ms X --target {t['name']}")
    return 0


def cmd_report(args) -> int:
    from hwkd.report.search import write_report
    from hwkd.search.run import open_run
    run, settings = open_run(args.run, *_given_storage(args))
    out = args.reports / settings["name"]
    s = write_report(run, settings, out)
    print(f"report: {out / 'index.html'} ({s['trials_complete']} complete trials, front of {len(s['front'])}, "
          f"hypervolume {s['hypervolume']:.3f} dB·ms)")
    return 0


def cmd_pick(args) -> int:
    from hwkd.report.card import write_model_card
    from hwkd.search.pick import pick
    from hwkd.search.run import open_run
    run, settings = open_run(args.run, *_given_storage(args))
    card = pick(run, settings, args.max_latency_ms, args.target, args.out)
    write_model_card(card, settings)
    out = card["folder"]
    lat = card["latency"]
    print(f"picked trial {card['trial']}: SI-SDR {card['quality']['val_si_sdr_db']:.2f} dB, "
          f"{lat['per_hop_ms']:.3f} ms per hop on {card['target']} ({lat['how']}), {card['params']:,} parameters")
    if lat.get("may_exceed_limit"):
        lo, hi = lat["band_per_hop_ms"]
        print(f"note: its predicted latency's band ({lo:.3f}-{hi:.3f} ms) reaches past --max-latency-ms "
              f"{lat['limit_ms']:g}; measure it on the device (hwkd profile --target {card['target']}) before "
              "relying on it")
    print(f"exported to {out}: " + ", ".join(v for v in card["files"].values() if v) + ", model_card.md")
    return 0


def default_dataset(in_channels: int, jobs: int | None = None, progress: bool = True) -> Path:
    """The embedded corpus's mono or Ambisonics set, built first if needed (hwkd.data.synth)."""
    from hwkd.data.synth import default_dataset as build
    return build(in_channels, jobs=jobs, progress=progress)


def _run_training(args, cfg, kd=None) -> int:
    from hwkd.audio.io import check_output
    from hwkd.train.recipe import train_model
    from hwkd.train.trainer import TrainConfig, check_budget
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       segment_s=args.segment_s, warmup_frac=args.warmup_frac,
                       device=args.device, threads=args.threads, ckpt_every=args.ckpt_every,
                       max_steps_per_epoch=args.max_steps_per_epoch, val_pesq_clips=args.val_pesq_clips,
                       workers=args.workers)
    check_budget(tcfg)                  # before the embedded corpus is built (minutes) for a run that cannot start
    check_output(args.out, folder=True, what="--out")
    data = args.data or default_dataset(cfg.in_channels, progress=not args.quiet)
    res = train_model(cfg, args.out, tcfg, data=data, kd=kd, init=args.init, train_split=args.train_split,
                      val_split=args.val_split, mixing=args.mixing, progress=not args.quiet,
                      meta={"command": "hwkd " + " ".join(sys.argv[1:])})
    lam = res.get("kd_weight", {}).get("lam")
    print(f"done: best val SI-SDR {res['best_val_si_sdr_db']:.2f} dB; training data: {res['train_data']}"
          + (f"; KD weight λ {lam:.4g} ({res['kd_weight']['rule']})" if lam is not None else "")
          + f"; checkpoints in {args.out}")
    return 0


def cmd_train(args) -> int:
    from hwkd.models.registry import resolve_config
    return _run_training(args, resolve_config(args.model, in_channels=args.in_channels, hop=args.hop))


def cmd_distill(args) -> int:
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.train.recipe import KDSpec
    teacher, _ = load_model(args.teacher or embedded_teacher_path())
    cfg = resolve_config(args.student, in_channels=args.in_channels or teacher.cfg.in_channels,
                         hop=args.hop or teacher.cfg.hop)
    return _run_training(args, cfg, KDSpec(args.kd, teacher, args.lam))


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
    if info.sample_rate != 16000:
        log.warning("%s: resampling %d Hz to 16000 Hz", args.input, info.sample_rate)
    from tqdm import tqdm
    with tqdm(total=round(info.duration_s * 16000), unit="sample", unit_scale=True, desc="enhance",
              disable=True if args.quiet else None, dynamic_ncols=True) as bar:    # None: only on a terminal
        n = enhance_file(Enhancer(model).eval(), args.input, args.output, args.streaming, progress=bar.update)
    how = ("hop by hop" if args.streaming else "offline, in chunks with the streaming state carried"
           if model.cfg.causal else "offline" if n <= NONCAUSAL_CHUNK_S * 16000 else
           f"offline in overlapping {NONCAUSAL_CHUNK_S:g}-s windows, cross-faded: a non-causal model's "
           "approximation of whole-file processing")
    print(f"wrote {args.output} ({n / 16000:.2f} s, {how})")
    return 0


def cmd_evaluate(args) -> int:
    from hwkd.audio.io import check_output, write_text_atomic
    from hwkd.data.datasets import select_pairs
    from hwkd.data.layouts import scan
    from hwkd.metrics import BASE_METRICS, DNSMOS_METRICS
    from hwkd.models.checkpoint import load_model
    from hwkd.train.evaluate import evaluate_pairs
    if args.save:                                  # before any work: a bad path would lose the evaluation
        check_output(args.save, folder=True, what="--save")
    if args.out:
        check_output(args.out, what="--out")
    model, ck = load_model(args.ckpt)
    data = args.data or default_dataset(model.cfg.in_channels, progress=not args.quiet)
    s = scan(data, channels=model.cfg.in_channels)
    split = args.split
    if split is None:                      # a plain paired folder has no splits: evaluate all of it
        split = "test" if any(x is not None for x in s.splits()) else "all"
    pairs = s.good_pairs(select_pairs(s, None if split == "all" else split))
    pairs = pairs[: args.limit] if args.limit else pairs
    args.split = split
    if not pairs:
        raise HwkdError(f"nothing to evaluate in {data} split {split}", "check the split and the files")
    if args.save and any(q.parent.resolve() == args.save.resolve() for p in pairs for q in (p.noisy, p.clean)):
        raise HwkdError(f"--save {args.save} holds the dataset's own files (they would be replaced)",
                        "give another folder for the enhanced files")
    res = evaluate_pairs(model, pairs, jobs=args.jobs, dnsmos=args.dnsmos, save_dir=args.save,
                         progress=not args.quiet)
    sn, se = res["noisy"], res["enhanced"]
    print(f"{args.ckpt} on {data} [{args.split}], {len(pairs)} utterances (mean ± 95 % CI)")
    print(f"  {'metric':<12}{'noisy':>18}{'enhanced':>18}{'gain':>9}")
    for k in BASE_METRICS + (DNSMOS_METRICS if args.dnsmos else ()):
        a, b = sn[k], se[k]
        if a["mean"] is None or b["mean"] is None:
            print(f"  {k:<12}{'-':>18}{'-':>18}")
            continue
        fa = f"{a['mean']:.3f} ± {a['ci95'] or 0:.3f}"
        fb = f"{b['mean']:.3f} ± {b['ci95'] or 0:.3f}"
        print(f"  {k:<12}{fa:>18}{fb:>18}{b['mean'] - a['mean']:>+9.3f}")
    print("  status noisy: " + ", ".join(f"{k} {v}" for k, v in sn["status_counts"].items())
          + "; enhanced: " + ", ".join(f"{k} {v}" for k, v in se["status_counts"].items()))
    if args.out:
        write_text_atomic(args.out, json.dumps({
            "checkpoint": str(args.ckpt), "model": ck["model"], "data": str(data), "split": args.split,
            "utterances": len(pairs), **res}, indent=2))
    return 0


def _csv_list(text: str | None, kind=str) -> list | None:
    if not text:
        return None
    try:
        out = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HwkdError(f"cannot read {text!r} as a comma-separated list", "e.g. --threads 1,2") from None
    if kind is int and any(v < 1 for v in out):
        raise HwkdError(f"--threads {text}: thread counts start at 1", "e.g. --threads 1,2")
    return out


def cmd_profile(args) -> int:
    from hwkd.hw.measure import Protocol
    from hwkd.hw.profile import load_any, profile
    from hwkd.hw.targets import load_target
    from hwkd.paths import hwkd_home
    target = load_target(args.target)
    net, label = load_any(args.model)
    out = args.out or hwkd_home() / "profiles" / f"{label}-{target['name']}"
    print(f"hwkd profile: {label} on {target['name']}")
    pairs = calib = None
    if args.int8:
        from hwkd.data.datasets import select_pairs
        from hwkd.data.layouts import scan
        data = args.int8_data or default_dataset(net.cfg.in_channels, progress=not args.quiet)
        sc = scan(data, channels=net.cfg.in_channels)
        pairs = sc.good_pairs(select_pairs(sc, args.int8_split))[: args.int8_clips]
        if not pairs:
            raise HwkdError(f"no utterances for the INT8 quality delta in {data} [{args.int8_split}]",
                            "give --int8-data with a val split")
        calib = sc.good_pairs(select_pairs(sc, args.int8_calib_split))[: args.int8_calib_clips]
        if not calib:
            raise HwkdError(f"no utterances to calibrate NNCF in {data} [{args.int8_calib_split}]",
                            "give --int8-calib-split naming a split of --int8-data")
    res = profile(net, target, out, runtimes=_csv_list(args.runtimes), threads=_csv_list(args.threads, int),
                  protocol=Protocol.named(args.protocol), check_macs=True, int8_pairs=pairs, int8_calib=calib,
                  progress=(lambda *a: None) if args.json else print)
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        print(f"profile written to {out / 'profile.json'} ({res['wall_s']} s)")
    return 0


def cmd_bench(args) -> int:
    import pandas as pd

    from hwkd.hw.measure import Protocol
    from hwkd.hw.profile import load_any, profile
    from hwkd.hw.targets import load_target
    targets = [load_target(t) for t in _csv_list(args.targets)]
    models = [load_any(m) for m in _csv_list(args.models)]
    rows = []
    exports = args.out.with_suffix("")
    for net, label in models:
        for target in targets:
            print(f"hwkd bench: {label} on {target['name']}")
            res = profile(net, target, exports / f"{label}-{target['name']}", runtimes=_csv_list(args.runtimes),
                          threads=_csv_list(args.threads, int), protocol=Protocol.named(args.protocol))
            base = {"model": label, "target": target["name"], "params": res["params"],
                    "gmacs_per_s": round(res["macs_per_s"] / 1e9, 4), "mode": res["mode"]}
            if not res["latency"]:
                rows.append({**base, "how": "not measured", "note": res.get("latency_note", "")})
            for m in res["latency"]:
                if "skipped" in m:
                    rows.append({**base, "runtime": m["runtime"], "threads": m.get("threads"), "how": "not measured",
                                 "note": m["skipped"]})
                    continue
                if m["how"].startswith("predicted"):
                    rows.append({**base, "runtime": m["runtime"], "threads": m["threads"],
                                 "p50_ms": round(m["p50_ms"], 4), "audio_ms_per_call": m["audio_ms_per_call"],
                                 "rtf": round(m["rtf"], 4), "realtime": m["realtime"], "how": m["how"],
                                 "note": m["provenance"]})
                    continue
                rows.append({**base, "runtime": m["runtime"], "version": m["version"], "threads": m["threads"],
                             "p50_ms": round(m["p50_ms"], 4), "p90_ms": round(m["p90_ms"], 4),
                             "p99_ms": round(m["p99_ms"], 4), "audio_ms_per_call": m["audio_ms_per_call"],
                             "rtf": round(m["rtf"], 4), "realtime": m["realtime"], "peak_rss_mib": m["peak_rss_mib"],
                             "runs": m["runs"], "other_load": round(m["other_load"] or 0, 3), "busy": m["busy"],
                             "how": m["how"], "cpu": m["fingerprint"]["cpu"]})
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    cols = [c for c in ("model", "target", "runtime", "threads", "mode", "gmacs_per_s", "p50_ms", "p90_ms", "rtf",
                        "realtime", "busy", "how") if c in df]
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
    runtimes = [r for r in (_csv_list(args.runtimes) or target["runtimes"]) if r in ("onnxruntime", "openvino")]
    if not runtimes:
        raise HwkdError(f"target {target['name']} has no runtime the predictor covers",
                        "calibrate with --runtimes onnxruntime or openvino")
    for rt in runtimes:
        for th in _csv_list(args.threads, int) or target["threads"]:
            print(f"hwkd calibrate: {target['name']} {rt} {th} thread(s)")
            calib = calibrate(rt, th, device=device, progress=print, partial=partial_path(target["name"], rt, th))
            path = save_calibration(calib, target["name"])
            print(f"  {len(calib['table_ms'])} blocks + {len(calib['anchors'])} anchors in {calib['seconds']} s "
                  f"-> {path}")
    return 0


def cmd_compare(args) -> int:
    from hwkd.experiments.compare import CompareConfig, run_compare, run_compare_parallel
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.report.compare import report
    cc = CompareConfig(schemes=_csv_list(args.kd), students=_csv_list(args.students), seeds=args.seeds,
                       epochs=args.epochs, batch_size=args.batch_size, segment_s=args.segment_s, lr=args.lr,
                       lam=args.lam, max_steps_per_epoch=args.max_steps_per_epoch, val_pesq_clips=args.val_pesq_clips,
                       eval_split=args.eval_split, eval_limit=args.eval_limit, threads=args.threads)
    if cc.seeds < 1 or not cc.schemes or not cc.students:
        raise HwkdError("hwkd compare needs at least one scheme, one student and one seed", "see --help")
    data = {k: v for k, v in ((1, args.data), (4, args.data_foa)) if v is not None}
    teacher = args.teacher or embedded_teacher_path()
    if args.workers < 1:
        raise HwkdError(f"--workers {args.workers}: needs at least 1", "give --workers 1 or more")
    if args.workers > 1 and not args.report_only:
        results = run_compare_parallel(args.out, cc, teacher, args.workers, data=data, progress=not args.quiet)
    else:
        results = run_compare(args.out, cc, teacher, data=data, progress=not args.quiet,
                              train_missing=not args.report_only)
    rdir = args.report_dir or Path("reports") / args.out.resolve().name
    report(results, rdir, cc)
    print((rdir / "table.md").read_text())
    print(f"report in {rdir} (table.md, table.csv, summary.json, quality_vs_size.png, gain_vs_size.png)")
    return 0
