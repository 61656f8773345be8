"""The `hwkd compare` report (REPORT_DIR: table.csv, table.md, summary.json, quality_vs_size.png,
gain_vs_size.png): per student and scheme, every metric as mean ± 95 % CI over seeds (Student t; each seed's
figure is that run's mean over the evaluation utterances), the gain over no-KD, and plots of quality and of the
gain against student size per scheme.

Gains are paired by seed: a seed fixes the student's initial weights and the order of the training data in
every scheme (only the loss differs), so the gain is the mean over seeds of (scheme − none) at the same
seed, with a Student-t 95 % CI of those differences. That removes the seed-to-seed spread every scheme
shares, which at a short budget is far larger than the differences between schemes. The same paired
differences set I²SRF-TFCKD against each other scheme, per student (the issue's question: does it beat
no-KD and every baseline on PESQ-WB and SI-SDR at every size?).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from hwkd.experiments.compare import CONDITIONS, METRICS, CompareConfig

FOCUS = "i2srf-tfckd"          # the scheme the head-to-head section sets against every other
HEAD_TO_HEAD = (("pesq_wb", "PESQ-WB", 3), ("si_sdr_db", "SI-SDR (dB)", 2))


def report(results: list[dict], report_dir: Path, cc: CompareConfig, cells_dir: Path | None = None,
           data: dict | None = None, clips: int = 1, teachers: dict | None = None) -> dict:
    """Aggregate the cells into the table (CSV, Markdown), summary.json, the plots and index.html. Works on a part
    of the matrix too: the header says how many cells of it are in. With the cells' folder (RUN/cells) the page
    also draws each scheme's learning curve per student (val SI-SDR per epoch, mean over seeds) and, with the
    evaluation datasets (in_channels -> dataset; default: the embedded corpus if built), lets each scheme's
    seed-0 student be heard on the first `clips` evaluation utterances. `teachers` (in_channels -> the teacher's
    scores, hwkd.experiments.compare.teacher_reference): the share of the teacher-student gap each scheme closes."""
    import pandas as pd

    from hwkd.metrics.quality import mean_ci
    diverged = [r for r in results if r.get("diverged")]     # cells whose training diverged: listed, not averaged
    results = [r for r in results if not r.get("diverged")]
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows, duels = [], []
    for student in dict.fromkeys(r["student"] for r in results):
        cells = [r for r in results if r["student"] == student]
        by_scheme = {sc: [r for r in cells if r["scheme"] == sc] for sc in dict.fromkeys(r["scheme"] for r in cells)}
        for scheme, rs in by_scheme.items():
            row = {"student": student, "in_channels": rs[0]["in_channels"], "params": rs[0]["params"],
                   "gmacs_per_s": round(rs[0]["macs_per_s"] / 1e9, 3), "scheme": scheme, "seeds": len(rs)}
            for pre, ood in (("", False), ("ood_", True)):       # in domain, then out of domain
                scored = [r for r in rs if _scores(r, ood) is not None]     # (cells from before ood: not scored)
                if ood:
                    row["ood_seeds"] = len(scored)
                for m in METRICS:
                    s = mean_ci([_scores(r, ood)[m] for r in scored])
                    row[f"{pre}{m}"] = s["mean"]
                    row[f"{pre}{m}_ci95"] = s["ci95"]
                    g = (paired_gain(scored, by_scheme.get("none", []), m, ood=ood) if scheme != "none"
                         else {"mean": 0.0 if scored else None, "ci95": None})
                    row[f"{pre}{m}_gain_vs_none"] = g["mean"]
                    row[f"{pre}{m}_gain_ci95"] = g["ci95"]
            row["ood_noisy_si_sdr"] = scored[0]["ood"]["noisy"]["si_sdr_db"] if scored else None
            row["ood_noisy_pesq_wb"] = scored[0]["ood"]["noisy"]["pesq_wb"] if scored else None
            row["ood_noisy_stoi"] = scored[0]["ood"]["noisy"]["stoi"] if scored else None
            row["ood_noisy_estoi"] = scored[0]["ood"]["noisy"]["estoi"] if scored else None
            row["threads"] = ",".join(sorted({str(r.get("threads", "?")) for r in rs}))
            row["kd_ratio"] = rs[0].get("kd_ratio")      # the tuned or fixed KD-weight ratio (None: balanced default)
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
                    d = paired_gain(by_scheme[FOCUS], rs, m, ood=True)
                    duel[f"ood_{m}"] = d["mean"] if d["n"] else None
                    duel[f"ood_{m}_ci95"] = d["ci95"]
                    duel["ood_seeds"] = d["n"]
                duels.append(duel)
    df = pd.DataFrame(rows, columns=["student", "in_channels", "params", "gmacs_per_s", "scheme", "seeds"]
                      if not rows else None)
    df.to_csv(report_dir / "table.csv", index=False)

    def pm(v, ci, nd, sign=""):
        return f"{v:{sign}.{nd}f}" + (f" ± {ci:.{nd}f}" if ci is not None and ci == ci else "")

    def fmt(r, m, nd):
        g = r[f"{m}_gain_vs_none"]
        return pm(r[m], r[f"{m}_ci95"], nd) + (f" ({pm(g, r[f'{m}_gain_ci95'], nd, '+')})"
                                                if r["scheme"] != "none" and g is not None and g == g else "")
    def duel_cols(d, pre=""):
        cols = []
        for m, _, nd in HEAD_TO_HEAD:
            if d[pre + m] is None:
                cols.append("–")
                continue
            txt, ci = pm(d[pre + m], d[f"{pre}{m}_ci95"], nd, "+"), d[f"{pre}{m}_ci95"]
            cols.append(f"**{txt}**" if ci is not None and abs(d[pre + m]) > ci else txt)
        return cols
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
    if diverged:
        lines += ["", "Diverged (not in the means): " + "; ".join(
            f"{r['student']} x {r['scheme']} x seed {r['seed']}" + (f" at ratio {r['kd_ratio']:g}" if r.get("kd_ratio")
                                                                    is not None else "") + f" ({r['diverged']})"
            for r in diverged) + "."]
    hosts: dict = {}
    for r in results:                # where each cell ran: the worker's host (cells from before it was recorded: ?)
        hosts.setdefault((r.get("worker") or "not recorded:").rsplit(":", 1)[0], []).append(r)
    lines += ["", "Cells trained on: " + "; ".join(
        f"{h} ({len(rs)} cell(s), {', '.join(sorted({str(r.get('cpu', '?')) for r in rs}))})"
        for h, rs in hosts.items()) + "."]
    tuning = {(r["student"], r["scheme"]): (r["kd_tuning"], r.get("kd_ratio")) for r in results if r.get("kd_tuning")}
    if tuning:
        ratios = sorted({float(k) for scores, _ in tuning.values() for k in scores})
        lines += ["", "KD-weight tuning: each KD scheme trained on a tuning seed of its own at every target gradient "
                  "ratio λ·‖∇L_KD‖ / ‖∇L_SE‖ (hwkd.train.objective), best val SI-SDR (dB) of each; the reported seeds "
                  "trained at the ratio chosen on val (**bold**), never on the evaluation split."
                  + (f" The grid trained on {cc.tune_on} alone: its choice sets every student's ratio (the other "
                     "students' rows repeat its scores)." if getattr(cc, "tune_on", None) else ""), "",
                  "| student | scheme | " + " | ".join(f"ratio {x:g}" for x in ratios) + " |",
                  "|---|---|" + "---|" * len(ratios)]
        for (st, sc), (scores, chosen) in tuning.items():
            cols = [("diverged" if scores[f"{x:g}"] is None else f"**{scores[f'{x:g}']:.2f}**" if x == chosen
                     else f"{scores[f'{x:g}']:.2f}") if f"{x:g}" in scores else "–" for x in ratios]
            lines.append(f"| {st} | {sc} | " + " | ".join(cols) + " |")
    fixed = getattr(cc, "kd_ratio", None)
    if fixed:
        lines += ["", "KD-weight ratios fixed, not tuned: " + ", ".join(f"{sc} {r:g}" for sc, r in fixed.items())
                  + " (each cell balanced so that λ·‖∇L_KD‖ / ‖∇L_SE‖ is that ratio on its first batches; other KD "
                  "schemes at the balanced default)."]
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
    clock_lines, clocks = _clock_lines(results, cells_dir)
    lines += clock_lines
    if duels:
        lines += ["", f"## {FOCUS} against every other scheme", "",
                  f"{FOCUS} minus the other scheme at the same seed, mean ± 95 % CI over the seeds both have; "
                  "**bold** where the interval lies wholly on one side of zero.", "",
                  "| student | versus | seeds | " + " | ".join(f"Δ {name}" for _, name, _ in HEAD_TO_HEAD) + " |",
                  "|---|---|---|" + "---|" * len(HEAD_TO_HEAD)]
        for d in duels:
            lines.append(f"| {d['student']} | {d['versus']} | {d['seeds']} | " + " | ".join(duel_cols(d)) + " |")
        lines += [""] + [verdict(student, [d for d in duels if d["student"] == student])
                         for student in dict.fromkeys(d["student"] for d in duels)]
    gap_lines, gaps = _gap_lines(results, teachers or {})
    lines += gap_lines
    lines += _ood_lines(df, fmt)
    if any(d.get("ood_seeds") for d in duels):
        lines += ["", f"{FOCUS} minus the other scheme at the same seed, out of domain:", "",
                  "| student | versus | seeds | " + " | ".join(f"Δ {name}" for _, name, _ in HEAD_TO_HEAD) + " |",
                  "|---|---|---|" + "---|" * len(HEAD_TO_HEAD)]
        lines += [f"| {d['student']} | {d['versus']} | {d['ood_seeds']} | " + " | ".join(duel_cols(d, "ood_"))
                  + " |" for d in duels if d.get("ood_seeds")]
        lines += [""] + [verdict(student, [d for d in duels if d["student"] == student], ood=True)
                         for student in dict.fromkeys(d["student"] for d in duels if d.get("ood_seeds"))]
    (report_dir / "table.md").write_text("\n".join(lines) + "\n")
    if rows:                    # (none when every finished cell diverged)
        _plot(df, report_dir / "quality_vs_size.png")
        _plot(df, report_dir / "gain_vs_size.png", gain=True)
    summary = {"settings": asdict(cc), "cells_finished": len(results), "cells_total": total,
               "trained_on": {h: len(rs) for h, rs in hosts.items()},
               "diverged": [{k: r.get(k) for k in ("student", "scheme", "seed", "kd_ratio", "diverged")}
                            for r in diverged],
               "kd_tuning": [{"student": st, "scheme": sc, "val_si_sdr_db_by_ratio": scores, "chosen_ratio": chosen}
                             for (st, sc), (scores, chosen) in tuning.items()], "rows": rows,
               "head_to_head": {"scheme": FOCUS, "pairs": duels},
               "teachers": {str(ch): {k: t.get(k) for k in ("file", "sha256", "params", "eval_split", "eval_clips",
                                                            "enhanced", "ood")}
                            for ch, t in (teachers or {}).items()},
               "gap_closed": gaps, "train_clock": clocks}
    curves = _curves(results, cells_dir)
    for k, (student, curve) in enumerate(curves.items()):       # a PNG per student (file names: its position)
        _plot_curves(student, curve, report_dir / f"curves_{k}.png")
    summary["learning_curves"] = {st: {"png": f"curves_{k}.png", "x": c["x"], "schemes": c["schemes"]}
                                  for k, (st, c) in enumerate(curves.items())}
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    listen = _listen(results, cells_dir, cc, data, report_dir, clips) if cells_dir is not None and clips > 0 else {}
    _html(report_dir, "\n".join(lines), df, curves, listen)
    return summary


def _clock_lines(results: list[dict], cells_dir: Path | None) -> tuple[list[str], list[dict]]:
    """What each student x scheme's cells cost: the median training wall clock per cell (steps only, across
    resumes; from the cell's record, else its history in `cells_dir`) and how they trained (alone, or side by side
    in groups whose members' turns are in each one's clock)."""
    import statistics

    from hwkd.experiments.compare import train_clock
    out = []
    for (st, sc) in dict.fromkeys((r["student"], r["scheme"]) for r in results if not r.get("diverged")):
        rs = [r for r in results if (r["student"], r["scheme"]) == (st, sc) and not r.get("diverged")]
        clock = [r.get("train_elapsed_s") if r.get("train_elapsed_s") is not None
                 else train_clock(_cell_dir(cells_dir, r)) if cells_dir is not None else None for r in rs]
        known = sorted(c for c in clock if c is not None)
        groups = sorted({r.get("group") for r in rs if r.get("group") is not None})
        out.append({"student": st, "scheme": sc, "cells": len(rs), "cells_timed": len(known),
                    "median_s": statistics.median(known) if known else None, "groups": groups,
                    "group_not_recorded": sum(r.get("group") is None for r in rs)})
    if not any(c["median_s"] is not None for c in out):
        return [], out
    lines = ["", "Training wall clock per cell (steps only, across resumes; validation and scoring left out), the "
             "median over its cells; a cell trained in a group of N (--group) took turns with N − 1 others, whose "
             "steps are in its clock:", "", "| student | scheme | cells timed | minutes per cell | trained |",
             "|---|---|---|---|---|"]
    for c in out:
        how = ", ".join("alone" if g == 1 else f"in groups of {g}" for g in c["groups"])
        if c["group_not_recorded"]:
            how += (", " if how else "") + f"{c['group_not_recorded']} not recorded"
        m = f"{c['median_s'] / 60:.1f}" if c["median_s"] is not None else "–"
        lines.append(f"| {c['student']} | {c['scheme']} | {c['cells_timed']} of {c['cells']} | {m} | {how} |")
    return lines, out


def _cell_dir(cells_dir: Path, r: dict) -> Path:
    from hwkd.experiments.compare import cell_key
    return Path(cells_dir) / cell_key(r["student"], r["scheme"], r["seed"], r.get("kd_ratio"))


def _curves(results: list[dict], cells_dir: Path | None) -> dict:
    """student -> scheme -> [(x, mean val SI-SDR over the seeds that reached it)] from each cell's recorded curve
    (else its history.jsonl, for cells from before results carried it); x is the training step count where
    every cell of the student recorded it, else the epoch (the key "x" of each student says which)."""
    points: dict = {}
    for r in results:
        curve = r.get("curve")
        if curve is None and cells_dir is not None:
            h = _cell_dir(cells_dir, r) / "history.jsonl"
            rows = [json.loads(line) for line in h.read_text().splitlines() if line.strip()] if h.is_file() else []
            curve = [(e["epoch"], e["val_si_sdr_db"], e.get("steps")) for e in rows]
        for p in curve or []:
            points.setdefault(r["student"], []).append((r["scheme"], p[0], p[1], p[2] if len(p) > 2 else None))
    out = {}
    for st, pts in points.items():
        by_steps = all(p[3] is not None for p in pts)
        per: dict = {}
        for sc, epoch, sdr, steps in pts:
            per.setdefault(sc, {}).setdefault(steps if by_steps else epoch, []).append(sdr)
        out[st] = {"x": "training steps" if by_steps else "epoch",
                   "schemes": {sc: sorted((x, sum(v) / len(v)) for x, v in xs.items()) for sc, xs in per.items()}}
    return out


def _listen(results: list[dict], cells_dir: Path, cc: CompareConfig, data: dict | None, report_dir: Path,
            clips: int) -> dict:
    """student -> listening set (hwkd.report.listen) of each scheme's seed-0 (else lowest-seed) student."""
    from hwkd.errors import HwkdError
    from hwkd.models.checkpoint import load_model
    from hwkd.report.listen import listen_to
    out = {}
    for k, student in enumerate(dict.fromkeys(r["student"] for r in results)):
        cells = sorted((r for r in results if r["student"] == student), key=lambda r: r["seed"])
        models = {}
        for r in cells:
            if r["scheme"] not in models:
                ck = _cell_dir(cells_dir, r) / "best.pt"
                models[r["scheme"]] = load_model(ck)[0] if ck.is_file() else None
        in_ch = cells[0]["in_channels"]
        source = (data or {}).get(in_ch)
        if source is None:
            from hwkd.data.synth import default_dataset
            try:
                source = default_dataset(in_ch, progress=False)
            except HwkdError:
                continue
        out[student] = listen_to(models, source, cc.eval_split, in_ch, clips, report_dir, sub=f"listen-{k}")
    return out


def _html(report_dir: Path, table_md: str, df, curves: dict, listen: dict) -> None:
    """index.html: the Markdown report as HTML, an interactive gain-vs-size plot per metric, learning curves and
    clips where the cells were given."""
    import html

    import markdown
    from bokeh.embed import components
    from bokeh.models import ColumnDataSource, HoverTool, NumeralTickFormatter, Span, Whisker
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure

    from hwkd.report.interactive import bokeh_head
    from hwkd.report.listen import listening_html
    figs = []
    schemes = [sc for sc in dict.fromkeys(df["scheme"]) if sc != "none"]
    for m, name in (("si_sdr_db", "SI-SDR (dB)"), ("pesq_wb", "PESQ-WB")) if schemes else ():   # (no-KD only: none)
        f = figure(width=560, height=340, x_axis_type="log", x_axis_label="student parameters",
                   y_axis_label=f"{name} gain over no-KD (paired by seed)", tools="box_zoom,reset")
        f.xaxis.formatter = NumeralTickFormatter(format="0a")
        f.add_layout(Span(location=0, dimension="width", line_color="black", line_width=1))
        for k, sc in enumerate(schemes):
            g = df[df["scheme"] == sc].sort_values("params")
            dodge = 1.04 ** (k - (len(schemes) - 1) / 2)
            y = [float(v) for v in g[f"{m}_gain_vs_none"]]
            ci = [float(v) if v is not None and v == v else 0.0 for v in g[f"{m}_gain_ci95"]]
            src = ColumnDataSource({"x": [float(p) * dodge for p in g["params"]], "y": y,
                                    "lo": [a - b for a, b in zip(y, ci)], "hi": [a + b for a, b in zip(y, ci)],
                                    "student": list(g["student"]), "scheme": [sc] * len(g), "ci": ci})
            color = Category10_10[k % 10]
            r = f.line("x", "y", source=src, color=color, legend_label=sc)
            f.scatter("x", "y", source=src, color=color, size=7)
            f.add_layout(Whisker(source=src, base="x", upper="hi", lower="lo", line_color=color))
            f.add_tools(HoverTool(renderers=[r], tooltips=[("scheme", "@scheme"), ("student", "@student"),
                                                           ("gain", "@y{+0.000} ± @ci{0.000}")]))
        f.legend.label_text_font_size = "8pt"
        f.legend.click_policy = "hide"
        f.add_layout(f.legend[0], "right")          # beside the plot, not over the points
        figs.append(f)
    for student, curve in curves.items():
        f = figure(width=520, height=280, x_axis_label=curve["x"], y_axis_label="val SI-SDR (dB), mean over seeds",
                   title=f"learning curves: {student}", tools="box_zoom,reset,hover")
        for k, (sc, pts) in enumerate(curve["schemes"].items()):
            f.line([p[0] for p in pts], [p[1] for p in pts], color=Category10_10[k % 10], legend_label=sc)
        f.legend.label_text_font_size = "8pt"
        figs.append(f)
    script, divs = components(figs) if figs else ("", ())     # (no plots when every finished cell diverged)
    body = markdown.markdown(table_md, extensions=["tables"])
    clips = "".join(f"<h3>{html.escape(st)}</h3>{listening_html(ls)}" for st, ls in listen.items()) or \
        "<p>No clips: the cells' checkpoints or the evaluation data are not on the machine that wrote this report.</p>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hwkd compare</title>
{bokeh_head()}
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px}} .plots{{display:flex;flex-wrap:wrap;gap:8px}}
table.listen td{{vertical-align:middle}} img.spec{{height:150px}} audio{{width:230px}}</style>
{script}</head><body>
<h2>Gains over no-KD against student size (interactive; click a legend entry to hide a scheme)</h2>
<div class=plots>{''.join(divs)}</div>
{body}
<h2>Listen</h2><p>Each scheme's seed-0 student on the first evaluation clips, beside the noisy input and the clean
reference (spectrograms on one colour scale).</p>{clips}
<h2>Static figures</h2><img src="quality_vs_size.png" style="max-width:100%"><img src="gain_vs_size.png"
style="max-width:100%">
<p>Files: <a href="table.csv">table.csv</a>, <a href="table.md">table.md</a>,
<a href="summary.json">summary.json</a>.</p>
</body></html>"""
    (report_dir / "index.html").write_text(page)


def _mixed_note(student: str, cells: list[dict]) -> list[str]:
    """Report lines for a student whose cells were trained under different conditions (thread count, CPU, device):
    either changes float sums, training amplifies that, and paired differences then carry it too."""
    lines = []
    for key, what, before in CONDITIONS:
        groups = {}
        for r in cells:
            groups.setdefault(str(r.get(key, before)), []).append(f"{r['scheme']} s{r['seed']}")
        if len(groups) > 1:
            lines += ["", f"Note: {student}'s cells were trained {what} ("
                      + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + "). Float sums change "
                      "with it, so its paired differences carry that change too; retrain those cells under one "
                      "condition (move their folders aside and resume) for a clean comparison."]
    return lines


def _ood_lines(df, fmt) -> list[str]:
    """The out-of-domain table: every scheme x student scored on the `ood` split (voices, noise families and SNRs
    that no training split has), mean ± CI over seeds and the gain over no-KD paired by seed, beside the noisy
    input's score; empty when no cell was scored there."""
    if "ood_seeds" not in df or not df["ood_seeds"].fillna(0).any():
        return []
    lines = ["", "## Out of domain", "", "The same checkpoints on the out-of-domain split `ood` (voices, noise "
             "families and SNRs no training split has); mean ± 95 % CI over seeds (gain over no-KD, paired by "
             "seed).", "",
             "| student | scheme | seeds | PESQ-WB | STOI | eSTOI | SI-SDR (dB) |", "|---|---|---|---|---|---|---|"]
    fewer = []
    for student, g in df.groupby("student", sort=False):
        fewer += [f"{student} x {r['scheme']} ({int(r['ood_seeds'])} of {int(r['seeds'])})" for _, r in g.iterrows()
                  if 0 < r["ood_seeds"] < r["seeds"]]
        first = g[g["ood_seeds"] > 0]
        if len(first):
            r = first.iloc[0]
            lines.append(f"| {student} | noisy input | – | {r['ood_noisy_pesq_wb']:.3f} | {r['ood_noisy_stoi']:.3f} | "
                         f"{r['ood_noisy_estoi']:.3f} | {r['ood_noisy_si_sdr']:.2f} |")
        for _, r in g.iterrows():
            if not r["ood_seeds"]:
                lines.append(f"| {student} | {r['scheme']} | 0 | not scored | | | |")
                continue
            view = {"scheme": r["scheme"], **{k[4:]: v for k, v in r.items() if str(k).startswith("ood_")}}
            lines.append(f"| {student} | {r['scheme']} | {int(r['ood_seeds'])} | {fmt(view, 'pesq_wb', 3)} | "
                         f"{fmt(view, 'stoi', 3)} | {fmt(view, 'estoi', 3)} | {fmt(view, 'si_sdr_db', 2)} |")
    if fewer:
        lines += ["", "Fewer seeds out of domain than in the table above (cells from before hwkd scored the "
                  "out-of-domain split, or whose dataset has none): " + "; ".join(fewer) + "."]
    return lines


GAP_METRICS = (("si_sdr_db", "SI-SDR"), ("pesq_wb", "PESQ-WB"))


def _gap_lines(results: list[dict], teachers: dict) -> tuple[list[str], list[dict]]:
    """How much of the teacher-student gap each KD scheme closes: its gain over no-KD paired by seed, as a share
    of (teacher − no-KD on the same seeds), the teacher scored on the same clips (teacher_reference), in domain
    and out of domain. ± the paired gain's 95 % CI over that gap: the uncertainty of the gain alone (the teacher is
    one model, its score taken as measured; no-KD's spread over seeds is not in it). No share where no-KD already
    reaches the teacher or either was not scored."""
    def top(t, pre, m):
        v = ((t.get("ood") or {}).get("enhanced") or {} if pre else t.get("enhanced") or {}).get(m)
        return v if isinstance(v, (int, float)) and v == v else None
    teachers = {ch: t for ch, t in (teachers or {}).items() if top(t, "", "si_sdr_db") is not None}
    rows, notes = [], []
    for student in dict.fromkeys(r["student"] for r in results):
        cells = [r for r in results if r["student"] == student]
        t = teachers.get(cells[0]["in_channels"])
        none = [r for r in cells if r["scheme"] == "none"]
        if t is None or not none:
            continue
        from hwkd.metrics.quality import mean_ci

        def gap_of(pre, m, seeds, t=t, none=none):
            vals = [(_scores(r, bool(pre)) or {}).get(m) for r in none if r["seed"] in seeds]
            vals = [v for v in vals if v is not None]
            return top(t, pre, m) - mean_ci(vals)["mean"] if vals and top(t, pre, m) is not None else None
        every = {r["seed"] for r in none}
        said = {pre: ", ".join(f"{g:+.2f} dB SI-SDR" if m == "si_sdr_db" else f"{g:+.3f} PESQ-WB"
                               for m, _ in GAP_METRICS if (g := gap_of(pre, m, every)) is not None) or "not scored"
                for pre in ("", "ood_")}
        notes.append(f"- {student} ({cells[0]['params']:,} parameters; {len(none)} no-KD seed(s)): teacher − no-KD "
                     f"= {said['']} in domain; {said['ood_']} out of domain")
        for scheme in dict.fromkeys(r["scheme"] for r in cells if r["scheme"] != "none"):
            mine = [r for r in cells if r["scheme"] == scheme]
            row = {"student": student, "scheme": scheme}
            for pre in ("", "ood_"):
                for m, _ in GAP_METRICS:
                    g = paired_gain(mine, none, m, ood=bool(pre))
                    paired = {r["seed"] for r in mine if (_scores(r, bool(pre)) or {}).get(m) is not None}
                    gp = gap_of(pre, m, paired) if g["n"] else None
                    ok = gp is not None and gp > 0
                    row[pre + m] = g["mean"] / gp if ok else None
                    row[f"{pre}{m}_ci95"] = g["ci95"] / gp if ok and g["ci95"] is not None else None
                    row[f"{pre}{m}_gap"] = gp
            rows.append(row)
    if not rows:
        return [], []

    def share(row, key):
        v, ci = row[key], row[f"{key}_ci95"]
        return "–" if v is None else f"{100 * v:+.0f} %" + (f" ± {100 * ci:.0f}" if ci is not None else "")
    lines = ["", "## The teacher–student gap each scheme closes", "",
             "The scheme's gain over no-KD (paired by seed) as a share of the gap from no-KD (on the same seeds) to "
             "the teacher, scored on the same clips ("
             + "; ".join(f"{ch}-channel students: `{t.get('file')}`, {t.get('params', 0):,} parameters, "
                         f"{t['enhanced']['si_sdr_db']:.2f} dB SI-SDR, PESQ-WB {t['enhanced']['pesq_wb']:.3f}"
                         for ch, t in teachers.items())
             + "); ± the gain's 95 % CI over the same gap (no-KD's own spread is not in it). 100 % reaches the "
             "teacher; below zero, KD hurt.", "", *notes, "",
             "| student | scheme | SI-SDR | PESQ-WB | SI-SDR, out of domain | PESQ-WB, out of domain |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['student']} | {r['scheme']} | {share(r, 'si_sdr_db')} | {share(r, 'pesq_wb')} | "
              f"{share(r, 'ood_si_sdr_db')} | {share(r, 'ood_pesq_wb')} |" for r in rows]
    return lines, rows


def paired_gain(cells: list[dict], base: list[dict], metric: str, ood: bool = False) -> dict:
    """mean_ci of (cell − base) over the seeds both lists have: {"mean", "ci95", "n"}; `ood`: on the cells'
    out-of-domain scores (cells without one are left out)."""
    from hwkd.metrics.quality import mean_ci

    def score(r):
        return (_scores(r, ood) or {}).get(metric)
    ref = {r["seed"]: score(r) for r in base if score(r) is not None}
    return mean_ci([score(r) - ref[r["seed"]] for r in cells if r["seed"] in ref and score(r) is not None])


def _scores(cell: dict, ood: bool = False) -> dict | None:
    """A cell's enhanced scores (metric -> mean): on the evaluation split, or (`ood`) on the out-of-domain split,
    None where the cell was not scored there."""
    return (cell.get("ood") or {}).get("enhanced") if ood else cell["enhanced"]


def verdict(student: str, duels: list[dict], ood: bool = False) -> str:
    """One sentence per student: against how many of the other schemes the focus scheme is ahead, by mean and
    by a paired CI that excludes zero, on each head-to-head metric (`ood`: out of domain)."""
    parts = []
    pre = "ood_" if ood else ""
    duels = [{m: d.get(pre + m) for m in (x for hh in HEAD_TO_HEAD for x in (hh[0], f"{hh[0]}_ci95"))}
             for d in duels]
    for m, name, _ in HEAD_TO_HEAD:
        ds = [d for d in duels if d[m] is not None]
        ahead = sum(d[m] > 0 for d in ds)
        sure = sum(d[m] > 0 and d[f"{m}_ci95"] is not None and d[m] > d[f"{m}_ci95"] for d in ds)
        behind = sum(d[m] < 0 and d[f"{m}_ci95"] is not None and -d[m] > d[f"{m}_ci95"] for d in ds)
        parts.append(f"{name} ahead of {ahead} of {len(ds)} by mean ({sure} with the CI above zero, "
                     f"{behind} with it below)")
    return f"- {student}{' (out of domain)' if ood else ''}: {FOCUS} " + "; ".join(parts) + "."


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


def _plot_curves(student: str, curve: dict, path: Path) -> None:
    """One student's learning curves: val SI-SDR (mean over seeds) against training steps (or epochs), one line
    per scheme."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for scheme, pts in curve["schemes"].items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=scheme)
    ax.set_xlabel(curve["x"])
    ax.set_ylabel("val SI-SDR (dB), mean over seeds")
    ax.set_title(f"learning curves: {student}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
