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

The report (REPORT_DIR: table.csv, table.md, summary.json, quality_vs_size.png, gain_vs_size.png): per
student and scheme, every metric as mean ± 95 % CI over seeds (Student t; each seed's figure is that run's
mean over the evaluation utterances), the gain over no-KD, and plots of quality and of the gain against
student size per scheme.

Gains are paired by seed: a seed fixes the student's initial weights and the order of the training data in
every scheme (only the loss differs), so the gain is the mean over seeds of (scheme − none) at the same
seed, with a Student-t 95 % CI of those differences. That removes the seed-to-seed spread every scheme
shares, which at a short budget is far larger than the differences between schemes. The same paired
differences set I²SRF-TFCKD against each other scheme, per student (the issue's question: does it beat
no-KD and every baseline on PESQ-WB and SI-SDR at every size?).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hwkd.audio.io import write_text_atomic
from hwkd.errors import HwkdError
from hwkd.paths import claim_folder
from hwkd.sysinfo import cpu_tag, die_with_parent

METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr_db")
# what a cell records of how it trained on the CPU; either changes float sums (report notes, log)
CONDITIONS = (("threads", "with different intra-op thread counts"), ("cpu", "on different CPUs"))
FOCUS = "i2srf-tfckd"          # the scheme the head-to-head section sets against every other
HEAD_TO_HEAD = (("pesq_wb", "PESQ-WB", 3), ("si_sdr_db", "SI-SDR (dB)", 2))


@dataclass
class CompareConfig:
    schemes: list
    students: list
    seeds: int = 3
    epochs: int = 1
    batch_size: int = 8
    segment_s: float = 2.0
    lr: float = 2e-3
    lam: float | None = None        # None: balanced per cell (hwkd.kd.objective)
    max_steps_per_epoch: int | None = None
    val_pesq_clips: int = 5
    eval_split: str = "test"
    eval_limit: int | None = None
    threads: int | None = None


def _label(student: str) -> str:
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
        if old != settings:
            diff = sorted(k for k in settings if old.get(k) != settings[k])
            raise HwkdError(f"{out} holds a comparison with other settings ({', '.join(diff)})",
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
    unknown = [s for s in cc.schemes if s != "none" and s not in known]
    if unknown:
        raise HwkdError(f"unknown KD scheme(s): {', '.join(unknown)}", f"use none or {', '.join(sorted(known))}")
    out = Path(out)
    _check_settings(out, cc, teacher_path, train_missing)
    teacher, _ = load_model(teacher_path)
    cells = [(st, sc, seed) for st in cc.students for sc in cc.schemes for seed in range(cc.seeds)]
    results, held, trained = [], [], False
    for i, (student, scheme, seed) in enumerate(cells, 1):
        cdir = out / "cells" / _label(student) / scheme / f"seed{seed}"
        done = cdir / "result.json"
        if done.is_file():
            results.append(_load_cell(cdir))
            continue
        if not train_missing:
            continue
        claim = claim_folder(cdir)
        if claim is None:
            held.append((f"{_label(student)} x {scheme} x seed {seed}", done))
            continue
        with claim:
            if done.is_file():                       # finished by another process since the check above
                results.append(_load_cell(cdir))
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


def _load_cell(cdir: Path) -> dict:
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

    from hwkd.data.datasets import select_pairs
    from hwkd.data.layouts import scan
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
    log(f"hwkd compare: cell {which}: {_label(student)} x {scheme} x seed {seed}")
    t0 = time.perf_counter()
    tcfg = TrainConfig(epochs=cc.epochs, batch_size=cc.batch_size, lr=cc.lr, seed=seed, segment_s=cc.segment_s,
                       threads=threads or cc.threads, max_steps_per_epoch=cc.max_steps_per_epoch,
                       val_pesq_clips=cc.val_pesq_clips)
    trained = train_model(cfg, cdir, tcfg, data=dset, kd=KDSpec(scheme, teacher, cc.lam), progress=progress,
                          meta={"command": f"hwkd compare cell {student} {scheme} seed {seed}"})
    best, _ = load_model(cdir / "best.pt")
    sc_ = scan(dset, channels=cfg.in_channels)
    pairs = sc_.good_pairs(select_pairs(sc_, cc.eval_split))
    pairs = pairs[: cc.eval_limit] if cc.eval_limit else pairs
    ev = evaluate_pairs(best, pairs, progress=False)
    res = {"student": _label(student), "student_spec": student, "scheme": scheme, "seed": seed,
           "in_channels": cfg.in_channels, "params": count_params(best), "macs_per_s": macs(best)["macs_per_s"],
           "eval_split": cc.eval_split, "eval_clips": len(pairs),
           "enhanced": {m: ev["enhanced"][m]["mean"] for m in METRICS},
           "noisy": {m: ev["noisy"][m]["mean"] for m in METRICS},
           "train_s": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(), "cpu": cpu_tag(),
           "train_data": trained["train_data"], "kd_weight": trained.get("kd_weight")}
    write_text_atomic(cdir / "result.json", json.dumps(res, indent=1))
    log(f"  {_label(student)} x {scheme} x seed {seed}: SI-SDR {res['enhanced']['si_sdr_db']:.2f} dB, "
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


def report(results: list[dict], report_dir: Path, cc: CompareConfig) -> dict:
    """Aggregate the cells into the table (CSV, Markdown), summary.json and the quality-vs-size plot.
    Works on a part of the matrix too: the header says how many cells of it are in."""
    import pandas as pd

    from hwkd.metrics.quality import mean_ci
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows, duels = [], []
    for student in dict.fromkeys(r["student"] for r in results):
        cells = [r for r in results if r["student"] == student]
        by_scheme = {sc: [r for r in cells if r["scheme"] == sc] for sc in dict.fromkeys(r["scheme"] for r in cells)}
        for scheme, rs in by_scheme.items():
            row = {"student": student, "in_channels": rs[0]["in_channels"], "params": rs[0]["params"],
                   "gmacs_per_s": round(rs[0]["macs_per_s"] / 1e9, 3), "scheme": scheme, "seeds": len(rs)}
            for m in METRICS:
                s = mean_ci([r["enhanced"][m] for r in rs])
                row[m] = s["mean"]
                row[f"{m}_ci95"] = s["ci95"]
                g = paired_gain(rs, by_scheme.get("none", []), m) if scheme != "none" else {"mean": 0.0, "ci95": None}
                row[f"{m}_gain_vs_none"] = g["mean"]
                row[f"{m}_gain_ci95"] = g["ci95"]
            row["threads"] = ",".join(sorted({str(r.get("threads", "?")) for r in rs}))
            row["noisy_si_sdr"] = rs[0]["noisy"]["si_sdr_db"]
            row["noisy_pesq_wb"] = rs[0]["noisy"]["pesq_wb"]
            rows.append(row)
        if FOCUS in by_scheme:
            for other, rs in by_scheme.items():
                if other == FOCUS:
                    continue
                duel = {"student": student, "versus": other}
                for m, _, _ in HEAD_TO_HEAD:
                    d = paired_gain(by_scheme[FOCUS], rs, m)
                    duel[m] = d["mean"]
                    duel[f"{m}_ci95"] = d["ci95"]
                    duel["seeds"] = d["n"]
                duels.append(duel)
    df = pd.DataFrame(rows)
    df.to_csv(report_dir / "table.csv", index=False)

    def pm(v, ci, nd, sign=""):
        return f"{v:{sign}.{nd}f}" + (f" ± {ci:.{nd}f}" if ci is not None and ci == ci else "")

    def fmt(r, m, nd):
        g = r[f"{m}_gain_vs_none"]
        return pm(r[m], r[f"{m}_ci95"], nd) + (f" ({pm(g, r[f'{m}_gain_ci95'], nd, '+')})"
                                                if r["scheme"] != "none" and g is not None and g == g else "")
    total = len(cc.schemes) * len(cc.students) * cc.seeds
    part = f" ({len(results)} of the {total} cells finished)" if len(results) < total else ""
    lines = [f"# KD comparison{part}: {len(df)} scheme x student rows, {cc.seeds} seed(s), {cc.epochs} epoch(s) of "
             f"{cc.segment_s:g}-s segments, batch {cc.batch_size}, lr {cc.lr:g}, "
             + (f"λ {cc.lam:g}" if cc.lam is not None else "λ balanced on each run's first batches (table below)")
             + (f", at most {cc.max_steps_per_epoch} steps per epoch" if cc.max_steps_per_epoch else ""),
             "", f"Evaluation split `{cc.eval_split}`; mean ± 95 % CI over seeds; (gain over no-KD, paired by seed, "
             "± its 95 % CI: a seed fixes the initial weights and the data order in every scheme).", "",
             "| student | params | scheme | PESQ-WB | STOI | eSTOI | SI-SDR (dB) |", "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['student']} | {r['params']:,} | {r['scheme']} | {fmt(r, 'pesq_wb', 3)} | "
                     f"{fmt(r, 'stoi', 3)} | {fmt(r, 'estoi', 3)} | {fmt(r, 'si_sdr_db', 2)} |")
    for student in dict.fromkeys(r["student"] for r in results):
        lines += _mixed_note(student, [r for r in results if r["student"] == student])
    lams = {}
    for r in results:
        lam = (r.get("kd_weight") or {}).get("lam")
        if lam is not None:
            lams.setdefault((r["student"], r["scheme"]), []).append(lam)
    if lams:
        lines += ["", "KD weight λ (mean over seeds; rule: "
                  + ", ".join(sorted({(r.get("kd_weight") or {}).get("rule", "?") for r in results
                                      if r.get("kd_weight")})) + "):", "",
                  "| student | scheme | λ |", "|---|---|---|"]
        lines += [f"| {st} | {sc} | {sum(v) / len(v):.4g} |" for (st, sc), v in lams.items()]
    if duels:
        lines += ["", f"## {FOCUS} against every other scheme", "",
                  f"{FOCUS} minus the other scheme at the same seed, mean ± 95 % CI over the seeds both have; "
                  "**bold** where the interval lies wholly on one side of zero.", "",
                  "| student | versus | seeds | " + " | ".join(f"Δ {name}" for _, name, _ in HEAD_TO_HEAD) + " |",
                  "|---|---|---|" + "---|" * len(HEAD_TO_HEAD)]
        for d in duels:
            cols = []
            for m, _, nd in HEAD_TO_HEAD:
                if d[m] is None:
                    cols.append("–")
                    continue
                txt, ci = pm(d[m], d[f"{m}_ci95"], nd, "+"), d[f"{m}_ci95"]
                cols.append(f"**{txt}**" if ci is not None and abs(d[m]) > ci else txt)
            lines.append(f"| {d['student']} | {d['versus']} | {d['seeds']} | " + " | ".join(cols) + " |")
        lines += [""] + [verdict(student, [d for d in duels if d["student"] == student])
                         for student in dict.fromkeys(d["student"] for d in duels)]
    (report_dir / "table.md").write_text("\n".join(lines) + "\n")
    _plot(df, report_dir / "quality_vs_size.png")
    _plot(df, report_dir / "gain_vs_size.png", gain=True)
    summary = {"settings": asdict(cc), "cells_finished": len(results), "cells_total": total, "rows": rows,
               "head_to_head": {"scheme": FOCUS, "pairs": duels}}
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _mixed_note(student: str, cells: list[dict]) -> list[str]:
    """Report lines for a student whose cells were trained under different CPU conditions (thread count, CPU):
    either changes float sums, training amplifies that, and paired differences then carry it too."""
    lines = []
    for key, what in CONDITIONS:
        groups = {}
        for r in cells:
            groups.setdefault(str(r.get(key, "not recorded")), []).append(f"{r['scheme']} s{r['seed']}")
        if len(groups) > 1:
            lines += ["", f"Note: {student}'s cells were trained {what} ("
                      + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + "). CPU float sums change "
                      "with it, so its paired differences carry that change too; retrain those cells under one "
                      "condition (move their folders aside and resume) for a clean comparison."]
    return lines


def paired_gain(cells: list[dict], base: list[dict], metric: str) -> dict:
    """mean_ci of (cell − base) over the seeds both lists have: {"mean", "ci95", "n"}."""
    from hwkd.metrics.quality import mean_ci
    ref = {r["seed"]: r["enhanced"][metric] for r in base}
    return mean_ci([r["enhanced"][metric] - ref[r["seed"]] for r in cells if r["seed"] in ref])


def verdict(student: str, duels: list[dict]) -> str:
    """One sentence per student: against how many of the other schemes the focus scheme is ahead, by mean and
    by a paired CI that excludes zero, on each head-to-head metric."""
    parts = []
    for m, name, _ in HEAD_TO_HEAD:
        ds = [d for d in duels if d[m] is not None]
        ahead = sum(d[m] > 0 for d in ds)
        sure = sum(d[m] > 0 and d[f"{m}_ci95"] is not None and d[m] > d[f"{m}_ci95"] for d in ds)
        behind = sum(d[m] < 0 and d[f"{m}_ci95"] is not None and -d[m] > d[f"{m}_ci95"] for d in ds)
        parts.append(f"{name} ahead of {ahead} of {len(ds)} by mean ({sure} with the CI above zero, "
                     f"{behind} with it below)")
    return f"- {student}: {FOCUS} " + "; ".join(parts) + "."


def _plot(df, path: Path, gain: bool = False) -> None:
    """Quality (mean ± CI over seeds) or, with gain=True, the paired gain over no-KD (± its CI) against
    student parameters, one line per scheme; SI-SDR and PESQ-WB side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (m, name) in zip(axes, (("si_sdr_db", "SI-SDR (dB)"), ("pesq_wb", "PESQ-WB"))):
        groups = [(sc, g) for sc, g in df.groupby("scheme", sort=False) if not (gain and sc == "none")]
        for k, (scheme, g) in enumerate(groups):
            g = g.sort_values("params")
            y, err = (f"{m}_gain_vs_none", f"{m}_gain_ci95") if gain else (m, f"{m}_ci95")
            dodge = 1.04 ** (k - (len(groups) - 1) / 2)         # schemes side by side at each size (log x)
            ax.errorbar(g["params"] * dodge, g[y], yerr=g[err].astype(float).fillna(0), marker="o", capsize=3,
                        label=scheme)
        if gain:
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("student parameters")
        ax.set_ylabel(f"{name} gain over no-KD (paired by seed)" if gain else name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
