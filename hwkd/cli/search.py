"""`hwkd search`, `hwkd report RUN` and `hwkd pick RUN`: the main job, its Pareto report and a deployable pick."""

from __future__ import annotations

import sys
from pathlib import Path

from hwkd.cli.common import (
    POS_FLOAT,
    POS_INT,
    STORAGE_HELP,
    duration,
    formatter,
    given_storage,
    nonneg_float,
    nonneg_int,
    storage_url,
)
from hwkd.errors import HwkdError
from hwkd.search.config import SUPERNET_DEFAULTS, SUPERNET_VAL_CLIPS, SearchConfig
from hwkd.search.controllers import CONTROLLERS

SC = SearchConfig()          # the defaults --help shows (a flag left out keeps a resumed run's own setting)


def register(sub) -> None:
    s = sub.add_parser(
        "search", formatter_class=formatter,
        help="the main job: search students for a target; Pareto report, picks")
    s.add_argument("--target", default=None, help="a target name from targets/ (e.g. rpi4, cpu) or a YAML file")
    s.add_argument("--space", default=None,
                   help="search space: a name in search_spaces/ or a YAML file (default: the shipped supernet's "
                        f"space when one is shipped, else {SC.space})")
    s.add_argument("--kd", default=SC.kd,
                   help="KD scheme each candidate is distilled with ('none': no KD; default %(default)s)")
    s.add_argument("--lam", type=nonneg_float, default=None,
                   help="KD weight λ (default: balanced per candidate on its first batches)")
    s.add_argument("--controller", default=SC.controller,
                   help=f"one of {', '.join(CONTROLLERS)} (default %(default)s)")
    s.add_argument("--trials", type=POS_INT, default=None,
                   help=f"stop after N trials in the whole search (default {SC.trials})")
    s.add_argument("--time-budget", type=duration, default=None,
                   help="stop starting trials after this long on this machine, e.g. 900, 15m, 1h "
                        f"(default {SC.time_budget_s / 60:g}m)")
    s.add_argument("--max-latency-ms", type=POS_FLOAT, default=None, help="constraint: per-hop latency on the target")
    s.add_argument("--no-realtime", action="store_true",
                   help="drop the default constraint that a hop is processed within the hop duration")
    s.add_argument("--steps", type=int, default=None,
                   help=f"rung-0 distillation steps per candidate (default {SC.steps}; with --supernet "
                        f"{SUPERNET_DEFAULTS['steps']}: scored as inherited)")
    s.add_argument("--promote-steps", type=int, default=None,
                   help="further steps for candidates on the rung-0 front (multi-fidelity; 0 = off; "
                        f"default {SC.promote_steps}; with --supernet {SUPERNET_DEFAULTS['promote_steps']})")
    s.add_argument("--promote-after", type=int, default=None,
                   help=f"finished trials before any promotion (default {SC.promote_after}; with --supernet "
                        f"{SUPERNET_DEFAULTS['promote_after']})")
    s.add_argument("--promote-share", type=float, default=None, metavar="F",
                   help="promote only while promotions have taken at most this share (0-1] of the finished "
                        "trials' time (default: no cap; with --supernet "
                        f"{SUPERNET_DEFAULTS['promote_share']}, so the budget still scores many candidates)")
    s.add_argument("--finetune-lr", type=float, default=None, metavar="LR",
                   help="peak learning rate of a fine-tune from trained weights (a promotion; every candidate with "
                        f"--steps N on a supernet) (default: half of {SC.lr:g}; with --supernet "
                        f"{SUPERNET_DEFAULTS.get('finetune_lr')})")
    s.add_argument("--batch-size", type=int, default=None, help=f"default {SC.batch_size}")
    s.add_argument("--val-pesq-clips", type=int, default=None,
                   help=f"val clips scored with PESQ per trial (default {SC.val_pesq_clips}; with --supernet "
                        f"{SUPERNET_DEFAULTS['val_pesq_clips']}: the --val-clips SI-SDR is scored on)")
    s.add_argument("--val-clips", type=POS_INT, default=None,
                   help="candidates (every rung) and the noisy reference are scored on the first N val clips "
                        f"(default: all; {SUPERNET_VAL_CLIPS} with --supernet)")
    s.add_argument("--segment-s", type=float, default=None,
                   help=f"training segment length (default {SC.segment_s:g} s)")
    s.add_argument("--seed", type=int, default=SC.seed)
    s.add_argument("--runtime", default=None, help="runtime the latency is taken on (default: the target's first)")
    s.add_argument("--threads", type=POS_INT, default=None, help="threads on the target (default: the target's first)")
    s.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: the embedded teacher)")
    s.add_argument("--supernet", type=Path, default=None, metavar="RUN",
                   help="a supernet trained over the space (hwkd supernet train): candidates start from its "
                        "weights instead of from scratch, scored as inherited (--steps 0, the default then) or "
                        "fine-tuned --steps N (default: the supernet shipped with hwkd, when there is one and "
                        "it covers the space)")
    s.add_argument("--from-scratch", action="store_true",
                   help="train every candidate from scratch, even where the shipped supernet covers the space")
    s.add_argument("--data", "--corpus", dest="data", type=Path, default=None,
                   help="dataset with train/val splits (default: the embedded corpus, built if needed)")
    s.add_argument("--name", default=None, help="run name (default: TARGET-DATE-TIME); folder $HWKD_HOME/runs/NAME")
    s.add_argument("--resume", default=None, metavar="RUN", help="continue a search (name or folder) with its settings")
    s.add_argument("--like", default=None, metavar="RUN",
                   help="re-target a finished search: its candidates and their quality, with size and latency taken "
                        "anew for --target (and --max-latency-ms, --runtime, --threads); nothing is trained. "
                        "With --trials or --time-budget the search then goes on there")
    s.add_argument("--storage", type=storage_url, default=None, help=STORAGE_HELP + "; else SQLite in the run folder")
    s.add_argument("--trial-timeout", type=duration, default=None, metavar="DURATION",
                   help="a trial process with no result after this long is hung: killed, failed and retried once, "
                        "e.g. 900, 30m (default: 10 min + 10 s per second of audio trained per rung)")
    s.add_argument("--no-report", action="store_true", help="do not write reports/NAME at the end")
    s.add_argument("--reports", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")
    s.add_argument("--jobs", type=POS_INT, default=None, help="corpus-building processes (default: all cores)")

    r = sub.add_parser("report", formatter_class=formatter,
                       help="HTML page, PNGs and CSV of a search's fronts under reports/RUN")
    r.add_argument("run", help="run name or folder")
    r.add_argument("--storage", type=storage_url, default=None,
                   help="the database URL (default: $HWKD_STORAGE, else the run's own; a server's password from "
                        "PGPASSWORD or ~/.pgpass)")
    r.add_argument("--reports", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")
    r.add_argument("--clips", type=nonneg_int, default=2,
                   help="val clips each front member enhances to listen to in the report (0: none; default 2)")

    pk = sub.add_parser("pick", formatter_class=formatter,
                        help="export the best student within a latency limit, ready to deploy")
    pk.add_argument("run", help="run name or folder")
    pk.add_argument("--max-latency-ms", type=POS_FLOAT, default=None, help="per-hop latency limit on the target")
    pk.add_argument("--target", default=None, help="the run's target (checked)")
    pk.add_argument("--out", type=Path, default=None, help="folder (default: picks/RUN-trialN)")
    pk.add_argument("--eval-clips", type=nonneg_int, default=20,
                    help="val utterances the pick is scored on, every metric beside the noisy input's (default 20)")
    pk.add_argument("--clips", type=nonneg_int, default=2, help="val clips to listen to in model_card.html (default 2)")
    pk.add_argument("--storage", type=storage_url, default=None,
                    help="the database URL (default: $HWKD_STORAGE, else the run's own; a server's password from "
                         "PGPASSWORD or ~/.pgpass)")
    s.set_defaults(func=cmd_search)
    r.set_defaults(func=cmd_report)
    pk.set_defaults(func=cmd_pick)


def cmd_search(args) -> int:
    from datetime import datetime

    from hwkd import store
    from hwkd.hw.targets import latency_source, load_target
    from hwkd.search.run import Search, check_name_free, check_search_budget, open_run, resolve_run, resume_config
    given, given_from = given_storage(args)
    if args.like and args.resume:
        raise HwkdError("--like starts a new run from a finished one; --resume continues a run",
                        "give one of them (a re-targeted run resumes with --resume NAME)")
    if args.from_scratch and (args.like or args.resume):
        raise HwkdError(f"--from-scratch is for a new search; {'--like' if args.like else '--resume'} keeps how the "
                        "run's candidates start", "drop --from-scratch, or start a new search with it")
    src = None
    if args.like:
        run, sc, src, storage = _like(args, given)
    elif args.resume:
        run, settings = open_run(args.resume, given, given_from)
        sc, storage = resume_config(run, settings, args.data, args.trial_timeout)
        check_fixed(args, sc, run.name, "--resume", RUN_FIXED + TARGET_FIXED)
        print(f"hwkd search: resuming {run.name} (target {sc.target}, {sc.controller}, {sc.kd})")
    else:
        if not args.target:
            raise HwkdError("hwkd search needs --target (or --resume RUN)", "e.g. hwkd search --target rpi4")
        target = load_target(args.target)
        name = args.name or f"{target['name']}-{datetime.now():%Y%m%d-%H%M%S}"
        run = resolve_run(name)
        storage = given
        space, supernet, start = candidate_start(args.space, args.supernet, args.from_scratch)
        defaults = SearchConfig(**(SUPERNET_DEFAULTS if supernet else {}))
        sc = SearchConfig(target=str(args.target), space=space, kd=args.kd, lam=args.lam,
                          controller=args.controller, seed=args.seed, max_latency_ms=args.max_latency_ms,
                          realtime=not args.no_realtime, runtime=args.runtime, threads=args.threads,
                          teacher=str(args.teacher) if args.teacher else None,
                          supernet=str(supernet) if supernet else None,
                          data=str(args.data) if args.data else None, trial_timeout_s=args.trial_timeout,
                          **{k: getattr(args, k) if getattr(args, k) is not None else getattr(defaults, k)
                             for k in ("trials", "steps", "promote_steps", "promote_after", "promote_share",
                                       "finetune_lr", "batch_size", "segment_s", "val_pesq_clips", "val_clips")},
                          time_budget_s=args.time_budget if args.time_budget is not None else defaults.time_budget_s)
        if args.val_pesq_clips is None and sc.val_clips is not None:
            # the default: on a supernet PESQ-WB on the clips SI-SDR is scored on (--val-clips N too); from scratch
            # its 5, or fewer where --val-clips says so
            sc.val_pesq_clips = sc.val_clips if supernet else min(sc.val_pesq_clips, sc.val_clips)
        elif sc.val_clips is not None and sc.val_pesq_clips > sc.val_clips:
            raise HwkdError(f"--val-pesq-clips {sc.val_pesq_clips}: more than the {sc.val_clips} val clips candidates "
                            "are scored on (--val-clips)", f"give at most {sc.val_clips}, or raise --val-clips")
        check_search_budget(sc)
        check_name_free(run, name, storage)
        print(f"hwkd search --target {target['name']}: run {name} ({run})")
        print(f"  candidates: {start}")
    if sc.data is None:
        print("hwkd search: embedded corpus (built on first use)")
    srch = Search(run, sc, storage=storage, progress=not args.quiet)
    if storage:
        print(f"hwkd search: store {store.redact(srch.storage_url)}")
    t = srch.target
    lat = {"measured": f"measured with {sc.runtime} ({sc.threads} thread(s))",
           "ssh": f"{sc.runtime}, {sc.threads} thread(s); measured over SSH",
           "predicted": f"{sc.runtime}, {sc.threads} thread(s); predicted (no device named)"}[latency_source(t)]
    print(f"  space {srch.space.name} ({srch.space.size()} candidates), controller {sc.controller}, KD {sc.kd}, "
          f"teacher {Path(sc.teacher).name}; latency on {t['name']}: {lat}; limit {srch.cost_ref:g} ms per hop; "
          f"noisy val SI-SDR {srch.quality_ref:.2f} dB")
    trials = args.trials if args.resume and args.trials is not None else None
    budget = args.time_budget if args.resume and args.time_budget is not None else None
    try:
        if sc.like:
            if src is None:        # a re-targeted run resumed: finish adopting what an interruption left out
                src = open_run(sc.like, given, SOURCE_STORE)
            print(f"hwkd search: re-targeting the complete trials of {src[0].name} to {t['name']} (quality kept, "
                  "size and latency taken anew)")
            with store.failures(srch.storage_url, f"adopted trials are kept; continue with: hwkd search --resume "
                                                  f"{run}"):
                ad = srch.adopt(*src, progress=None if args.quiet else print)
            skipped = "".join(f"\n  skipped trial {n}: {why}" for n, why in ad["skipped"])
            print(f"hwkd search: re-targeted {ad['adopted']} trial(s) of {ad['source_trials']} in "
                  f"{ad['elapsed_s']:.1f} s{skipped}")
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


def candidate_start(space: str | None, supernet: Path | None, from_scratch: bool) -> tuple[str, Path | None, str]:
    """Where a new search's candidates start: (space, supernet or None, a line saying which and why). Given
    --supernet, its space by default; else the shipped supernet when there is one and it covers the space (its
    own space by default); else from scratch over the default space."""
    from hwkd.search.space import list_spaces, load_space
    from hwkd.train.supernet import read_description, shipped_supernet, uncovered
    from hwkd.train.supernet import supernet_space as recorded_space

    def supernet_space(run):            # its space, when it is one of search_spaces/ (a YAML elsewhere: not known)
        name = recorded_space(run)
        return name if name in list_spaces() else None
    if from_scratch and supernet is not None:
        raise HwkdError("--supernet and --from-scratch contradict each other", "give one of them")
    if from_scratch:
        return space or SC.space, None, "trained from scratch (--from-scratch)"
    if supernet is not None:
        return space or supernet_space(supernet) or SC.space, supernet, f"inherited from the supernet {supernet}"
    shipped = shipped_supernet()
    if shipped is None:
        return space or SC.space, None, "trained from scratch (no supernet is shipped with this hwkd)"
    space = space or supernet_space(shipped) or SC.space
    missing = uncovered(read_description(shipped / "supernet.json")[2], load_space(space).configs())
    if missing is not None:
        return space, None, (f"trained from scratch: the shipped supernet does not cover space {space} (e.g. "
                             f"channels {missing.channels}, layers {missing.layers}, depth {missing.depth}, "
                             f"in_channels {missing.in_channels})")
    return space, shipped, f"inherited from the shipped supernet (trained over {space}; --from-scratch to train)"


# the source of a re-targeted run is opened in its own store: --storage names the new run's, and lends the source
# its password only where both are one database (store.resolve_manifest refuses a mismatch for "--storage" alone)
SOURCE_STORE = "the re-targeted run's store"

# flags whose value a run fixes (flag attribute, SearchConfig field); a resumed or re-targeted run keeps its own
RUN_FIXED = (("space", "space"), ("kd", "kd"), ("lam", "lam"), ("controller", "controller"), ("seed", "seed"),
             ("steps", "steps"), ("promote_steps", "promote_steps"), ("promote_after", "promote_after"),
             ("promote_share", "promote_share"), ("finetune_lr", "finetune_lr"), ("batch_size", "batch_size"),
             ("segment_s", "segment_s"),
             ("val_pesq_clips", "val_pesq_clips"),
             ("val_clips", "val_clips"), ("teacher", "teacher"), ("supernet", "supernet"))
# ... and, for a resumed run only, its target (--like takes these anew)
TARGET_FIXED = (("target", "target"), ("runtime", "runtime"), ("threads", "threads"),
                ("max_latency_ms", "max_latency_ms"))


def check_fixed(args, sc: SearchConfig, run_name: str, how: str, fields) -> None:
    """A flag given with --resume / --like that the run fixes to another value is refused (it would be ignored),
    in one line naming it; a flag left at its default, or given the run's own value, is fine."""
    parser_defaults = {"space": SC.space, "kd": SC.kd, "controller": SC.controller, "seed": SC.seed}
    clash = []
    for flag, field in fields:
        given = getattr(args, flag, None)
        if given is None or (flag in parser_defaults and given == parser_defaults[flag]):
            continue
        mine = getattr(sc, field)
        if isinstance(given, Path) or flag in ("teacher", "supernet", "target"):
            same = mine is not None and (str(given) == str(mine) or Path(given).resolve() == Path(mine).resolve())
        else:
            same = given == mine
        if not same:
            clash.append(f"--{flag.replace('_', '-')} {given} (the run has "
                         f"{mine if mine is not None else 'none recorded: its default'})")
    if clash:
        raise HwkdError(f"{how} {run_name} keeps the run's own settings; given: {'; '.join(clash)}",
                        "drop those flags, or start a new search with them (hwkd search --target ... --name NEW)")


def _like(args, given):
    """A new run re-targeting the finished search --like: its settings but the target, runtime, threads and
    limits given here."""
    from datetime import datetime

    from hwkd.hw.targets import load_target
    from hwkd.search.run import check_name_free, check_source, open_run, resolve_run, resume_config
    if not args.target:
        raise HwkdError("hwkd search --like RUN needs --target", "e.g. hwkd search --like RUN --target rpi5")
    src_run, src_settings = open_run(args.like, given, SOURCE_STORE)
    check_source(src_run, src_settings)           # before the new run's folder is made
    sc, _ = resume_config(src_run, src_settings, args.data, args.trial_timeout)
    check_fixed(args, sc, src_run.name, "--like", RUN_FIXED)
    target = load_target(args.target)
    sc.target, sc.runtime, sc.threads = str(args.target), args.runtime, args.threads
    sc.max_latency_ms, sc.realtime = args.max_latency_ms, not args.no_realtime
    sc.like = str(src_run.resolve())
    # re-targeting alone trains nothing: no new trials unless --trials (for the whole run, the adopted ones
    # included) or --time-budget asks for them
    sc.trials = args.trials if args.trials is not None else (None if args.time_budget is not None else 0)
    sc.time_budget_s = args.time_budget
    name = args.name or f"{target['name']}-like-{src_run.name}-{datetime.now():%H%M%S}"
    run = resolve_run(name)
    check_name_free(run, name, given)
    print(f"hwkd search --like {src_run.name} --target {target['name']}: run {name} ({run})")
    return run, sc, (src_run, src_settings), given


def cmd_report(args) -> int:
    from hwkd.audio.io import check_output
    from hwkd.report.search import write_report
    from hwkd.search.run import open_run
    check_output(args.reports, folder=True, what="--reports")
    run, settings = open_run(args.run, *given_storage(args))
    out = args.reports / settings["name"]
    s = write_report(run, settings, out, clips=args.clips)
    print(f"report: {out / 'index.html'} ({s['trials_complete']} complete trials, front of {len(s['front'])}, "
          f"hypervolume {s['hypervolume']:.3f} dB·ms)")
    return 0

def cmd_pick(args) -> int:
    from hwkd.report.card import write_card_html, write_model_card
    from hwkd.search.pick import pick
    from hwkd.search.run import open_run
    if args.out is not None:
        from hwkd.audio.io import check_output
        check_output(args.out, folder=True, what="--out")
    run, settings = open_run(args.run, *given_storage(args))
    card = pick(run, settings, args.max_latency_ms, args.target, args.out, eval_clips=args.eval_clips)
    write_model_card(card, settings)
    write_card_html(card, settings, clips=args.clips)
    out = card["folder"]
    lat = card["latency"]
    print(f"picked trial {card['trial']}: SI-SDR {card['quality']['val_si_sdr_db']:.2f} dB, "
          f"{lat['per_hop_ms']:.3f} ms per hop on {card['target']} ({lat['how']}), {card['params']:,} parameters")
    if lat.get("may_exceed_limit"):
        lo, hi = lat["band_per_hop_ms"]
        print(f"note: its predicted latency's band ({lo:.3f}-{hi:.3f} ms) reaches past --max-latency-ms "
              f"{lat['limit_ms']:g}; measure it on the device (hwkd profile --target {card['target']}) before "
              "relying on it")
    print(f"exported to {out}: " + ", ".join(v for v in card["files"].values() if v) + ", model_card.md, "
          "model_card.html")
    return 0
