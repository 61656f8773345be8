"""`hwkd compare`: every KD scheme x every student x every seed at one training budget, then a report.

Each cell (student, scheme, seed) is an ordinary distillation run (`none` = plain SE training) in
RUN/cells/STUDENT/SCHEME/seedN, evaluated on the evaluation split into result.json. A cell with a
result is never redone; an interrupted cell resumes from its last checkpoint (the trainer's exact resume),
so rerunning the same command after Ctrl-C or kill -9 continues where it stopped. The settings are kept
in RUN/compare.json; rerunning with different ones is refused (use another --out).

Cells run in parallel: a process takes a cell by an exclusive lock on RUN/cells/.../claim.lock
(flock, held while it trains; the kernel drops it when the process dies, so a killed worker leaves no stale
claim), and skips cells another process holds. `--workers N` starts N such processes with the cores shared
out (intra-op threads = cores // N); starting the same command twice does the same by hand. Small
students scale poorly over intra-op threads, so cells side by side finish the matrix sooner
(benchmarks/compare_parallel.py measures it; figures in README).

The report over the cells is hwkd.report.compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hwkd.audio.io import write_text_atomic
from hwkd.config import changed_settings
from hwkd.errors import HwkdError
from hwkd.experiments.config import CompareConfig  # noqa: F401  (the settings; imported from here too)
from hwkd.metrics.quality import BASE_METRICS
from hwkd.paths import claim_folder
from hwkd.sysinfo import cpu_tag, die_with_parent

METRICS = BASE_METRICS          # what a cell records (mean over the evaluation utterances)
# what a cell records of how it trained on the CPU; either changes float sums (report notes, log)
CONDITIONS = (("threads", "with different intra-op thread counts"), ("cpu", "on different CPUs"))


@dataclass
class CellResult:
    """One finished cell (student x scheme x seed) as RUN/cells/STUDENT/SCHEME/seedN/result.json holds it and the
    report reads it: the means over the evaluation utterances, the student's size, and how it was trained
    (threads and CPU: either changes float sums, hwkd.report.compare flags a student whose cells mix them)."""
    student: str                      # its label (student_label)
    student_spec: str                 # as given: a preset or a config file
    scheme: str
    seed: int
    in_channels: int
    params: int
    macs_per_s: float
    eval_split: str
    eval_clips: int
    enhanced: dict                    # metric -> mean over the evaluation utterances
    noisy: dict
    train_s: float
    threads: int | str
    cpu: str
    train_data: str | None = None
    kd_weight: dict | None = None     # λ and how it was chosen (hwkd.train.objective)

    def to_dict(self) -> dict:
        return asdict(self)


def student_label(student: str) -> str:
    """A student's name in folders and tables: a preset's name, or a checkpoint's / config file's stem."""
    return Path(student).stem if Path(student).suffix else student


def _check_settings(out: Path, cc: CompareConfig, teacher_path: Path, train_missing: bool) -> None:
    """Write RUN/compare.json on a first start; refuse other settings (or a retrained teacher) later."""
    out.mkdir(parents=True, exist_ok=True)
    # the teacher by content too: a retrained teacher at the same path must not mix into an old run
    digest = hashlib.sha256(Path(teacher_path).read_bytes()).hexdigest()
    settings = {**asdict(cc), "teacher": str(teacher_path), "teacher_sha256": digest}
    saved = out / "compare.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        diff = changed_settings(old, settings)
        if diff:
            raise HwkdError(f"{out} holds a comparison with other settings ({'; '.join(diff)})",
                            "rerun with the same options to resume, or give a new --out")
    elif not train_missing:
        raise HwkdError(f"{out} holds no comparison yet (no compare.json)",
                        "start it without --report-only, or give the run folder of a running comparison")
    else:
        write_text_atomic(saved, json.dumps(settings, indent=1))


def run_compare(out: Path, cc: CompareConfig, teacher_path: Path, data: dict | None = None,
                progress: bool = True, log=print, train_missing: bool = True, threads: int | None = None) -> list[dict]:
    """Train and evaluate every missing cell no other process holds; returns the finished cells' results.
    `data`: {in_channels: dataset path}. With train_missing=False nothing is trained: the finished cells
    alone (a look at a matrix still running). `threads`: this process's intra-op threads (default cc.threads)."""
    from hwkd.kd.base import schemes
    from hwkd.models.checkpoint import load_model

    known = schemes()
    unknown = [s for s in cc.schemes if s not in known]
    if unknown:
        raise HwkdError(f"unknown KD scheme(s): {', '.join(unknown)}", f"use none or {', '.join(sorted(known))}")
    out = Path(out)
    _check_settings(out, cc, teacher_path, train_missing)
    teacher, _ = load_model(teacher_path)
    cells = [(st, sc, seed) for st in cc.students for sc in cc.schemes for seed in range(cc.seeds)]
    results, held, trained = [], [], False
    for i, (student, scheme, seed) in enumerate(cells, 1):
        cdir = out / "cells" / student_label(student) / scheme / f"seed{seed}"
        done = cdir / "result.json"
        if done.is_file():
            results.append(load_cell(cdir))
            continue
        if not train_missing:
            continue
        claim = claim_folder(cdir)
        if claim is None:
            held.append((f"{student_label(student)} x {scheme} x seed {seed}", done))
            continue
        with claim:
            if done.is_file():                       # finished by another process since the check above
                results.append(load_cell(cdir))
                continue
            results.append(_run_cell(cdir, f"{i}/{len(cells)}", student, scheme, seed, cc, teacher, data,
                                     progress, log, threads))
            trained = True
    for key, what in CONDITIONS:
        seen = sorted({str(r.get(key, "not recorded")) for r in results})
        if trained and len(seen) > 1:
            log(f"hwkd compare: the finished cells were trained {what} ({'; '.join(seen)}); CPU results change "
                "with them, so the report notes the students where they are mixed")
    held = [name for name, done in held if not done.is_file()]     # those still running now, not at the look
    if held:
        log(f"hwkd compare: {len(held)} cell(s) left to the other process(es) training them: " + "; ".join(held))
    if not results and not train_missing:
        raise HwkdError(f"no finished cells in {out} yet", "wait for the first cell, or rerun without --report-only")
    return results


def load_cell(cdir: Path) -> dict:
    """A finished cell's result.json; cells from before hwkd recorded `threads` there get it from the training
    config in their checkpoint ("default": torch's own count on the machine that trained it)."""
    res = json.loads((cdir / "result.json").read_text())
    if "threads" not in res and (cdir / "last.pt").is_file():
        import torch
        ck = torch.load(cdir / "last.pt", map_location="cpu", weights_only=True)
        res["threads"] = ck.get("train", {}).get("config", {}).get("threads") or "default"
    return res


def _run_cell(cdir: Path, which: str, student: str, scheme: str, seed: int, cc: CompareConfig, teacher,
              data: dict | None, progress: bool, log, threads: int | None) -> dict:
    """Train (or resume) one cell, evaluate its best checkpoint, write and return result.json."""
    import torch

    from hwkd.data.datasets import split_pairs
    from hwkd.hw.cost import count_params, macs
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    from hwkd.train.evaluate import evaluate_pairs
    from hwkd.train.recipe import KDSpec, train_model
    from hwkd.train.trainer import TrainConfig

    cfg = resolve_config(student, hop=teacher.cfg.hop)
    dset = (data or {}).get(cfg.in_channels)
    if dset is None:
        from hwkd.data.synth import default_dataset
        dset = default_dataset(cfg.in_channels, progress=progress)
    log(f"hwkd compare: cell {which}: {student_label(student)} x {scheme} x seed {seed}")
    t0 = time.perf_counter()
    tcfg = TrainConfig(epochs=cc.epochs, batch_size=cc.batch_size, lr=cc.lr, seed=seed, segment_s=cc.segment_s,
                       threads=threads or cc.threads, max_steps_per_epoch=cc.max_steps_per_epoch,
                       val_pesq_clips=cc.val_pesq_clips)
    trained = train_model(cfg, cdir, tcfg, data=dset, kd=KDSpec(scheme, teacher, cc.lam), progress=progress,
                          meta={"command": f"hwkd compare cell {student} {scheme} seed {seed}"})
    best, _ = load_model(cdir / "best.pt")
    pairs = split_pairs(dset, cc.eval_split, channels=cfg.in_channels, limit=cc.eval_limit)
    ev = evaluate_pairs(best, pairs, progress=False)
    res = CellResult(student=student_label(student), student_spec=student, scheme=scheme, seed=seed,
                     in_channels=cfg.in_channels, params=count_params(best), macs_per_s=macs(best)["macs_per_s"],
                     eval_split=cc.eval_split, eval_clips=len(pairs),
                     enhanced={m: ev["enhanced"][m]["mean"] for m in METRICS},
                     noisy={m: ev["noisy"][m]["mean"] for m in METRICS},
                     train_s=round(time.perf_counter() - t0, 1), threads=torch.get_num_threads(), cpu=cpu_tag(),
                     train_data=trained["train_data"], kd_weight=trained.get("kd_weight")).to_dict()
    write_text_atomic(cdir / "result.json", json.dumps(res, indent=1))
    log(f"  {student_label(student)} x {scheme} x seed {seed}: SI-SDR {res['enhanced']['si_sdr_db']:.2f} dB, "
        f"PESQ {res['enhanced']['pesq_wb']:.3f} ({res['train_s']} s)")
    return res


def _worker(k: int, out: Path, cc: CompareConfig, teacher_path: Path, data: dict, threads: int,
            parent: int | None = None) -> None:
    import sys
    die_with_parent(parent)

    def log(msg):       # one write per line: lines of side-by-side workers must not interleave
        sys.stdout.write(f"[worker {k}] {msg}\n")
        sys.stdout.flush()
    try:
        run_compare(out, cc, teacher_path, data=data, progress=False, log=log, threads=threads)
    except HwkdError as e:
        print(f"hwkd compare: worker {k}: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_compare_parallel(out: Path, cc: CompareConfig, teacher_path: Path, workers: int, data: dict | None = None,
                         progress: bool = True, log=print) -> list[dict]:
    """run_compare in `workers` processes that share the cells out by their claims; then every finished cell.
    Intra-op threads per worker: cc.threads, else cores // workers (at least 1). A worker that fails stops
    the others (their cells resume on the next run), as one failing cell stops a single-process run."""
    import multiprocessing as mp

    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config

    if workers <= 1:
        return run_compare(out, cc, teacher_path, data=data, progress=progress, log=log)
    out = Path(out)
    _check_settings(out, cc, teacher_path, True)
    # the datasets once, here: workers synthesising the default corpus side by side would race
    data = dict(data or {})
    hop = load_model(teacher_path)[0].cfg.hop
    for ch in sorted({resolve_config(st, hop=hop).in_channels for st in cc.students} - set(data)):
        from hwkd.data.synth import default_dataset
        data[ch] = default_dataset(ch, progress=progress)
    threads = cc.threads or max(1, (os.cpu_count() or 1) // workers)
    log(f"hwkd compare: {workers} workers, {threads} thread(s) each; progress per cell")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(k, out, cc, Path(teacher_path), data, threads, os.getpid()),
                         name=f"compare-{k}")
             for k in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            failed = [(k, p.exitcode) for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if failed:
                break
            time.sleep(0.5)
        failed = [(k, p.exitcode) for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    if failed:
        k, code = failed[0]
        raise HwkdError(f"compare worker {k} failed (exit code {code}); the other workers were stopped",
                        "see its message above; finished cells are kept, rerun the same command to resume")
    return run_compare(out, cc, teacher_path, data=data, progress=False, log=log, train_missing=False)


