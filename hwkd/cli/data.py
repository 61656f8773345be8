"""`hwkd data synth`, `hwkd data check PATH` and `hwkd metrics PATH`: the corpus, a dataset's layout, and the
quality of noisy or enhanced audio."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hwkd.cli.common import POS_FLOAT, POS_INT, formatter, log, nonneg_int, sizes
from hwkd.errors import HwkdError


def register(sub) -> None:
    from hwkd.data.synth import CorpusSpec
    d = sub.add_parser(
        "data", formatter_class=formatter,
        help="data synth: build the embedded corpus; data check PATH: validate a dataset")
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="subcommands")
    ds = dsub.add_parser(
        "synth", formatter_class=formatter,
        help="build or resume the embedded default corpus (mono + Ambisonics)")
    ds.add_argument("--out", type=Path, default=None, help="corpus folder (default: $HWKD_HOME/corpus/default)")
    ds.add_argument("--seed", type=int, default=0)
    for set_name, label in (("mono", "mono"), ("foa", "4-channel Ambisonics")):
        default = CorpusSpec().sizes[set_name]
        ds.add_argument(f"--{set_name}", type=sizes, default=default, metavar="TRAIN,VAL,TEST[,OOD]",
                        help=f"{label} clip counts (default {','.join(map(str, default))}; OOD: the "
                             "out-of-domain split, voices, noises and SNRs no other split has)")
    ds.add_argument("--clip-s", type=POS_FLOAT, default=4.0, help="clip length in seconds (default 4)")
    ds.add_argument("--jobs", type=POS_INT, default=None, help="worker processes (default: all cores)")
    dc = dsub.add_parser(
        "check", formatter_class=formatter,
        help="recognise a dataset layout; report counts, hours, rates, problems")
    dc.add_argument("path", type=Path, help="dataset folder or CSV manifest")
    dc.add_argument("--channels", type=POS_INT, default=None, help="expected input channel count")
    dc.add_argument("--mic", choices=("A", "B"), default="A", help="L3DAS23 microphone (default A)")
    dc.add_argument("--json", action="store_true", help="print the report as JSON")
    dc.add_argument("--headers-only", action="store_true",
                    help="read file headers only (fast; skips the NaN / truncated-file scan of every sample)")

    m = sub.add_parser(
        "metrics", formatter_class=formatter,
        help="PESQ-WB, STOI, eSTOI, SI-SDR (+DNSMOS) of noisy or enhanced audio")
    m.add_argument("path", type=Path, help="dataset folder or CSV manifest")
    m.add_argument("--split", default=None, help="split to score (e.g. test, mono/test)")
    m.add_argument("--enhanced", type=Path, default=None,
                   help="folder of enhanced files named like the noisy ones (default: score the noisy input)")
    m.add_argument("--channel", type=nonneg_int, default=0, help="input channel scored for multi-channel input "
                                                          "(default 0: W for Ambisonics)")
    m.add_argument("--dnsmos", action="store_true", help="also DNSMOS (about 3 s per clip and core)")
    m.add_argument("--limit", type=POS_INT, default=None, help="score only the first N pairs")
    m.add_argument("--jobs", type=POS_INT, default=None, help="worker processes (default: all cores)")
    m.add_argument("--out", type=Path, default=None, help="write per-clip CSV here and a .json summary beside it")
    d.set_defaults(func=lambda args: d.print_help() or 0)
    ds.set_defaults(func=cmd_data_synth)
    dc.set_defaults(func=cmd_data_check)
    m.set_defaults(func=cmd_metrics)


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
