"""KD schemes across student sizes on the embedded default, at one fixed training budget.

Every scheme (no KD, the baselines, I²SRF-TFCKD) x 3 student sizes x 3 seeds, each distilled from the
embedded teacher with the same budget, evaluated on the mono test split; the table (mean ± 95 % CI over
seeds, gain over no-KD paired by seed, I²SRF-TFCKD against every other scheme) goes to
reports/kd-compare-BUDGET/ and benchmarks/results/kd_compare_BUDGET.json (BUDGET: e.g. 600steps; the foa and
ablations parts add _foa, _ablations). It is `hwkd compare` with fixed
settings, so an interrupted run resumes where it stopped; --workers N trains N cells side by side.

    python benchmarks/kd_compare.py [--part main|ablations|foa] [--steps 150] [--evals 1] [--seeds 3]
                                    [--schemes ...] [--students ...]
                                    [--lam 0.1 | --kd-ratios 0.25,0.5,1 | --kd-ratio 0.5]
                                    [--tune-on STUDENT] [--workers N] [--group G] [--device cuda] [--storage URL]

--part picks the matrix (each its own run folder, report and results JSON, at the same budget):
  main       every scheme x the three mono sizes (kd-small, kd-medium, kd-large)
  ablations  no-KD, I²SRF-TFCKD and its seven ablations (intra-only, inter-only, no fusion, time-only, freq-only,
             uniform weights, unpooled taps) at kd-medium
  foa        the Ambisonics student kd-medium-foa with the Ambisonics teacher (the mono one through the W channel
             until that is shipped): no-KD, I²SRF-TFCKD and the baseline with the best mean SI-SDR gain at
             kd-medium in the main matrix's results at the same budget (results/kd_compare_STEPSsteps.json;
             --schemes overrides)
Every cell is scored on the test split and on the out-of-domain split.

--evals N validates N times over the budget (N epochs of steps/N steps: N points on each learning curve).
λ: --lam fixes it for every scheme (the 100-step matrix of 2026-11-25 used 0.1); without it each cell balances
it on its first batches (hwkd.train.objective), and --kd-ratios tunes that balance on val per scheme and size
(--tune-on kd-small: per scheme, on kd-small's grid alone, for every size); --kd-ratio fixes the balance
instead. The ablations and foa parts given --kd-ratios tune nothing: they train at the ratios the main matrix's
grid chose (results/kd_compare_STEPSsteps.json; every ablation at I²SRF-TFCKD's), recorded as fixed_ratios.

The cells live under $HWKD_HOME (not in git). On a new machine, --restore-from results/kd_compare_BUDGET.json puts
the cells that JSON recorded back (result.json marked `restored_from`) so that only the missing ones train;
it refuses a JSON made with other settings. Check first that this machine reproduces a recorded cell
(same thread count: a rerun is bit-identical), e.g. with --students kd-medium --schemes none --seeds 1
--workers 2 --out-suffix check, which reports into its run folder only.

The budget where students learn (issue "A KD comparison that can separate the schemes"): --steps 600 --evals 6
--kd-ratios 0.25,0.5,1 --tune-on kd-small (no-KD kd-small, the smallest, gains +3.8 to +4.0 dB SI-SDR on test
there). Cost on the 2-core machine, 1 thread per cell: a no-KD kd-small cell ~11 minutes, a KD step 3-4 s alone
(the frozen teacher's forward ~40 % of it at kd-medium), so the 93 cells of that matrix (kd-small's tuning grid
included) are tens of hours of CPU: --workers 2 --group 4 (cells of one seed side by side sharing the teacher's
forward; results/compare_group.json) cuts the KD cells' share by about a third; it resumes across sessions
(restore its record first on a new machine).
"""

import argparse
import json
from pathlib import Path

from hwkd.audio.io import write_text_atomic
from hwkd.cli.compare import fixed_ratios
from hwkd.config import changed_settings
from hwkd.experiments.compare import (
    TEACHER_SCORES,
    CompareConfig,
    open_matrix,
    run_compare,
    run_compare_parallel,
    settings_of,
    student_label,
    teacher_reference,
)
from hwkd.kd.base import schemes
from hwkd.paths import hwkd_home
from hwkd.report.compare import report
from hwkd.store import given_storage
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.trainer import check_device

from _common import RESULTS, save

BASELINES = ("none", "response", "fitnet", "at", "pkt-frame", "semckd", "reviewkd")
# three sizes below the embedded teacher (376,686 parameters): presets of hwkd.models.registry
SIZES = ("kd-small", "kd-medium", "kd-large")
ABLATIONS = ("i2srf-intra-only", "i2srf-inter-only", "i2srf-no-fusion", "i2srf-time-only", "i2srf-freq-only",
             "i2srf-uniform", "i2srf-unpooled")     # the last: the taps' pooling undone (README "KD cost")


def settings_as_new(cc: CompareConfig) -> dict:
    """cc's settings as a new matrix of them records them: the mixing version settled to the current one (the λ
    rule, `balance`, is left as given: the callers compare matrices whatever rule each balances with)."""
    from dataclasses import asdict

    from hwkd.data import MIX_VERSION
    return {**asdict(cc), "mixing_version": cc.mixing_version or MIX_VERSION}


def best_baseline(recorded: Path, cc: CompareConfig, student: str = "kd-medium", exclude=()) -> dict:
    """The baseline KD scheme with the highest mean SI-SDR gain over no-KD at `student` in a finished main
    matrix's kd_compare.json whose settings are `cc`'s (budget, λ rule, seeds, evaluation) but for the schemes
    and students, `exclude` left out: {"scheme", "gains", "from"}."""
    rec = json.loads(recorded.read_text()) if recorded.is_file() else {}
    # (tune_on: how the main matrix chose its weights; balance: how λ was estimated, not what it means)
    diff = changed_settings(rec.get("settings", {}), settings_as_new(cc),
                            ignore=("schemes", "students", "tune_on", "balance"))
    finished = rec.get("cells_total") is not None and rec.get("cells_finished") == rec.get("cells_total")
    rows = rec.get("rows", []) if rec and not diff and finished else []
    gains = {r["scheme"]: r["si_sdr_db_gain_vs_none"] for r in rows if r["student"] == student
             and r["scheme"] in BASELINES and r["scheme"] not in ("none", *exclude)
             and r["si_sdr_db_gain_vs_none"] is not None}
    if not gains:
        why = ("does not exist" if not rec else f"has other settings ({'; '.join(diff)})" if diff
               else "is not finished" if not finished else f"has no {student} baselines")
        raise SystemExit(f"kd_compare: --part foa takes its baseline from the finished main matrix of the same "
                         f"settings, and {recorded} {why}; run --part main with these options first, or give "
                         "--schemes none,i2srf-tfckd,BASELINE")
    best = max(gains, key=gains.get)
    return {"scheme": best, "si_sdr_db_gain_vs_none": gains, "from": f"{recorded.name} ({rec['machine']['date']})"}


def main_ratios(recorded: Path, cc: CompareConfig, schemes_: list, student: str = "kd-medium") -> dict:
    """The KD-weight ratio the main matrix's tuning grid chose for each of `schemes_` at `student` (with --tune-on:
    that student's grid), read from its kd_compare.json (settings `cc`'s but for schemes and students; its grid
    cells for these schemes finished): {"ratios": {scheme: ratio}, "from"}. What the ablations and foa parts
    train at, so that they need no grid of their own."""

    from hwkd.experiments.compare import choose_ratio
    rec = json.loads(recorded.read_text()) if recorded.is_file() else {}
    diff = changed_settings(rec.get("settings", {}), settings_as_new(cc), ignore=("schemes", "students", "balance"))
    grid_of = cc.tune_on or student
    out, missing = {}, []
    for sc in schemes_:
        scores = {c["kd_ratio"]: c.get("val_si_sdr_db") for c in rec.get("tuning_cells", [])
                  if c["student"] == grid_of and c["scheme"] == sc}
        chosen = choose_ratio(scores) if len(scores) == len(cc.kd_ratios or ()) else None
        if chosen is None:
            missing.append(sc)
        out[sc] = chosen
    if not rec or diff or missing:
        why = ("does not exist" if not rec else f"has other settings ({'; '.join(diff)})" if diff
               else f"has not finished the tuning grid of {', '.join(missing)} at {grid_of}")
        raise SystemExit(f"kd_compare: with --kd-ratios, the ablations and foa parts train at the ratios the main "
                         f"matrix chose, and {recorded} {why}; run --part main with these options first (its "
                         "--report-only records the grid), or give --kd-ratio R (fixed) instead of --kd-ratios"
                         + ("; give the main matrix's --tune-on too" if any(d.startswith("tune_on:") for d in diff)
                            else ""))
    return {"ratios": out, "from": f"{recorded.name} ({rec['machine']['date']}), {grid_of}'s grid"}


def response_cannot_teach(student: str) -> tuple:
    """("response",) when the embedded teacher of `student`'s input channels has another output form (mask_mode)
    than the student — the steered Ambisonics teacher and a spec-form student: response KD compares masks of one
    form — else ()."""
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    from hwkd.models.teacher import embedded_teacher_path
    sc = resolve_config(student)
    return ("response",) if load_model(embedded_teacher_path(sc.in_channels))[0].cfg.mask_mode != sc.mask_mode else ()


PART_STUDENTS = {"main": list(SIZES), "ablations": ["kd-medium"], "foa": ["kd-medium-foa"]}
PART_SCHEMES = {"main": [*BASELINES, "i2srf-tfckd"], "ablations": ["none", "i2srf-tfckd", *ABLATIONS],
                "foa": ["none", "i2srf-tfckd"]}        # + the main matrix's best baseline (best_baseline)


def restore(recorded: Path, out: Path, cc: CompareConfig) -> None:
    """Write the cells a kd_compare.json recorded back into RUN/cells (none already there is touched)."""
    from dataclasses import asdict

    from hwkd.audio.io import write_text_atomic
    from hwkd.experiments.compare import cell_key, student_label

    if not recorded.is_file():
        raise SystemExit(f"kd_compare: {recorded} does not exist; give the benchmarks/results/kd_compare_BUDGET.json "
                         "that recorded this matrix")
    try:
        rec = json.loads(recorded.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        rec = None
    if not (isinstance(rec, dict) and {"settings", "cells", "machine"} <= rec.keys()):
        raise SystemExit(f"kd_compare: {recorded} is not a kd_compare.json (no settings, cells and machine); give "
                         "the benchmarks/results/kd_compare_BUDGET.json that recorded this matrix")
    from hwkd.experiments.compare import with_legacy
    legacy = with_legacy(rec["settings"])
    for k in ("mixing_version", "balance"):     # settled when the recorded matrix opened: the restored one keeps them
        if getattr(cc, k) is None:
            setattr(cc, k, legacy[k])
    settings = asdict(cc)
    # students by label: matrices recorded before the sizes were presets named them by config files of that name
    # a record tuned per student restores into a matrix tuned on one (its other grids stay unused), not back
    diff = [d for d in changed_settings(legacy, settings, ignore=("students",))
            if not d.startswith("tune_on: None -> ")]
    if [student_label(s) for s in rec["settings"].get("students", [])] != [student_label(s) for s in cc.students]:
        diff.append(f"students: {rec['settings'].get('students')} -> {cc.students}")
    if diff:
        raise SystemExit(f"kd_compare: {recorded} recorded a matrix with other settings ({'; '.join(diff)}); "
                         "restore with the options it was run with")
    n = 0
    # the reported cells and the KD-weight tuning grid's (records from before it kept them have none: those tune
    # again, and may choose another ratio)
    for cell in rec["cells"] + rec.get("tuning_cells", []):
        cdir = out / "cells" / cell_key(student_label(cell["student_spec"]), cell["scheme"], cell["seed"],
                                        cell.get("kd_ratio"))
        if (cdir / "result.json").is_file():
            continue
        cdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cdir / "result.json",
                          json.dumps({"cpu": f"{rec['machine']['cpu']}, an earlier host (ISA not recorded)", **cell,
                                      "restored_from": f"{recorded.name} ({rec['machine']['date']})"}, indent=1))
        n += 1
    if rec.get("teacher_scores") and not (out / TEACHER_SCORES).is_file():       # the teacher's scores too
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / TEACHER_SCORES, json.dumps(rec["teacher_scores"], indent=1))
    print(f"kd_compare: {n} recorded cell(s) restored into {out / 'cells'}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150, help="training steps per run (one epoch capped)")
    ap.add_argument("--evals", type=int, default=1, help="validations over the budget (learning-curve points)")
    ap.add_argument("--lam", type=float, default=None, help="fixed KD weight (default: balanced per cell)")
    ap.add_argument("--kd-ratios", default=None, help="KD-weight tuning grid (hwkd compare --kd-ratios)")
    ap.add_argument("--kd-ratio", default=None,
                    help="fixed KD-weight ratio, R or SCHEME=R,... (hwkd compare --kd-ratio); the ablations and foa "
                         "parts given --kd-ratios take the main matrix's choices as fixed ratios instead")
    ap.add_argument("--tune-on", default=None,
                    help="the student whose grid sets every student's ratio (hwkd compare --tune-on)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--part", choices=("main", "ablations", "foa"), default="main",
                    help="which matrix (default main; see the module docstring)")
    ap.add_argument("--schemes", default=None, help="default: the part's schemes")
    ap.add_argument("--students", default=None, help="default: the part's students")
    ap.add_argument("--eval-limit", type=int, default=None,
                    help="test and out-of-domain utterances (default: all 100 of each)")
    ap.add_argument("--workers", type=int, default=1, help="cells side by side (hwkd compare --workers)")
    ap.add_argument("--group", type=int, default=1,
                    help="per worker, cells of one seed side by side sharing the teacher's forward (hwkd compare "
                         "--group); results as without it")
    ap.add_argument("--restore-from", type=Path, default=None,
                    help="a kd_compare.json of this matrix: write its recorded cells back before resuming")
    ap.add_argument("--out-suffix", default="", help="run folder kd-compare-STEPSsteps-SUFFIX (a scratch run)")
    ap.add_argument("--storage", default=None,
                    help="the matrix's study on a database server shared by machines (hwkd compare --storage; "
                         "default: $HWKD_STORAGE, else SQLite in the run folder)")
    ap.add_argument("--device", default="cpu", help="where the cells train (hwkd compare --device)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report the cells finished so far (the run may go on in another process)")
    a = ap.parse_args()
    students = a.students.split(",") if a.students else PART_STUDENTS[a.part]
    assert a.evals >= 1 and a.steps % a.evals == 0, "--steps must be a multiple of --evals"

    def config(schemes_: list, fixed: dict | None = None) -> CompareConfig:
        """The part's settings; `fixed` (scheme -> ratio): trained at these ratios instead of the --kd-ratios grid."""
        return CompareConfig(schemes=schemes_, students=students, seeds=a.seeds, epochs=a.evals, batch_size=8,
                             segment_s=2.0, lr=2e-3, lam=a.lam, max_steps_per_epoch=a.steps // a.evals,
                             val_pesq_clips=5, eval_split="test", eval_limit=a.eval_limit, threads=None,
                             kd_ratios=([float(x) for x in a.kd_ratios.split(",")] if a.kd_ratios and fixed is None
                                        else None),
                             tune_on=student_label(a.tune_on) if a.tune_on and fixed is None else None,
                             kd_ratio=fixed if fixed is not None else fixed_ratios(a.kd_ratio, schemes_))
    part = "" if a.part == "main" else f"-{a.part}"
    out = hwkd_home() / "runs" / (f"kd-compare-{a.steps}steps{part}" + (f"-{a.out_suffix}" if a.out_suffix else ""))
    chosen, baseline = (a.schemes.split(",") if a.schemes else list(PART_SCHEMES[a.part])), None
    if a.part == "foa" and not a.schemes:
        if (out / "compare.json").is_file():        # a started foa matrix keeps the baseline it chose
            chosen = json.loads((out / "compare.json").read_text())["schemes"]
        else:
            baseline = best_baseline(RESULTS / f"kd_compare_{a.steps}steps.json", config(PART_SCHEMES["main"]),
                                     exclude=response_cannot_teach("kd-medium-foa"))
            chosen.append(baseline["scheme"])
    unknown = [s for s in chosen if s not in schemes()]
    assert not unknown, f"unknown schemes {unknown}"
    ratios = None
    if a.part != "main" and a.kd_ratios:
        # the main matrix's tuning chose each scheme's ratio: the part trains at it (ablations: all at
        # I²SRF-TFCKD's) rather than tuning a grid of its own
        if (out / "compare.json").is_file():        # a started part keeps the ratios it chose
            fixed = json.loads((out / "compare.json").read_text()).get("kd_ratio")
            ratios = {"ratios": fixed, "from": "the part's run folder"} if fixed else None
        else:
            kd = [s for s in chosen if s != "none"]
            wanted_ = ["i2srf-tfckd"] if a.part == "ablations" else kd
            ratios = main_ratios(RESULTS / f"kd_compare_{a.steps}steps.json", config(PART_SCHEMES["main"]), wanted_)
            r0 = ratios["ratios"]
            ratios["ratios"] = {s: r0["i2srf-tfckd"] for s in kd} if a.part == "ablations" else r0
    cc = config(chosen, ratios["ratios"] if ratios else None)
    if not a.report_only:
        check_device(a.device)
    if a.restore_from:
        restore(a.restore_from, out, cc)
    storage = given_storage(a.storage)[0]
    with LoadMeter() as load:
        if a.workers > 1 and not a.report_only:
            results = run_compare_parallel(out, cc, None, a.workers, storage=storage, group=a.group, device=a.device)
        else:       # (teacher None: the embedded teacher of each student's input channels)
            results = run_compare(out, cc, None, train_missing=not a.report_only, storage=storage, group=a.group,
                                  device=a.device)
    tuning_cells = []
    if cc.kd_ratios:            # the tuning grid's cells too: --restore-from puts them back
        matrix = open_matrix(out, cc, None, storage, create=False)
        if matrix is not None:
            with matrix.failures():
                tuning_cells = list(matrix.tuning_cells().values())
    # a scratch run (--out-suffix) reports into its own folder, not into the repository
    report_dir = out / "report" if a.out_suffix else Path(__file__).resolve().parents[1] / "reports" / out.name
    # the teacher on the same clips (the top of the teacher-student gap), scored once and kept in the run folder
    teacher_scores = teacher_reference(out, cc, None)
    summary = report(results, report_dir, cc, cells_dir=out / "cells", teachers=teacher_scores)
    record = {"settings": summary["settings"], "cells_finished": summary["cells_finished"],
              "cells_total": summary["cells_total"], "rows": summary["rows"], "cells": results,
              "tuning_cells": tuning_cells, "teacher_scores": {str(k): v for k, v in teacher_scores.items()},
              "load": load.as_dict(), "machine": fingerprint()}
    if baseline is not None:
        record["foa_baseline"] = baseline           # how the foa part chose its baseline
    if ratios is not None:
        record["fixed_ratios"] = ratios             # where the part's fixed KD-weight ratios came from
    # the teacher files the cells were distilled from (by SHA-256), as the matrix's settings name them: the first
    # students' teacher, and the Ambisonics students' own where it is another file
    teachers = settings_of(cc, None)
    for key in ("teacher", "teacher_foa"):
        if key in teachers:
            record.update({f"{key}_file": teachers[key], f"{key}_sha256": teachers[f"{key}_sha256"]})
    if a.out_suffix:
        write_text_atomic(report_dir / "kd_compare.json", json.dumps(record, indent=2) + "\n")
    else:
        save(f"kd_compare_{a.steps}steps{part.replace('-', '_')}", record)
    print(json.dumps(summary["rows"][:3], indent=1))


if __name__ == "__main__":
    main()
