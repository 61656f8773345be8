"""`hwkd report RUN`: reports/NAME/ with index.html, trials.csv, front.csv, summary.json and PNGs.

Rows come from the run's store (every trial of every worker). The front is the set of complete, feasible
trials that no other such trial beats on both val SI-SDR and per-hop latency on the run's target (and,
separately, on SI-SDR and MACs). Hypervolume (pareto.hypervolume) is computed in (SI-SDR, latency) with the
noisy input's SI-SDR and the run's latency limit as reference point, after each completed trial in
completion order. Every latency says how it was obtained (measured on what, or predicted by what).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from hwkd.errors import HwkdError
from hwkd.search.pareto import fronts
from hwkd.store import collect


def write_report(run: Path, settings: dict, out_dir: Path, clips: int = 2) -> dict:
    """Writes the report folder; `clips` val utterances (0: none) are enhanced by each front member whose checkpoint
    is on this machine, to listen to beside the noisy input and the clean reference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwkd.search.pareto import hypervolume, hypervolume_history
    df, attrs = collect(run, settings)
    if df.empty or not (df["state"] == "COMPLETE").any():
        raise HwkdError(f"search {settings['name']} has no completed trial yet", "let it run (or resume it) first")
    df = fronts(df)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    q_ref, c_ref = attrs["quality_ref"], attrs["cost_ref"]
    done = df[df["state"] == "COMPLETE"].sort_values("completed")
    feas = done[done["feasible"] == True]  # noqa: E712
    hv_hist = hypervolume_history(list(feas["val_si_sdr_db"]), list(feas["latency_ms"]), q_ref, c_ref)
    hv = hypervolume(feas["val_si_sdr_db"], feas["latency_ms"], q_ref, c_ref) if len(feas) else 0.0
    df.sort_values("trial").to_csv(out_dir / "trials.csv", index=False)
    front = df[df["on_front"]].sort_values("latency_ms")
    front.to_csv(out_dir / "front.csv", index=False)
    target = settings["target"]
    how = sorted(set(done["latency_how"].dropna()))
    prov = sorted(set(done["latency_provenance"].dropna()))

    # plots
    for cost, label, fname, flag in (("latency_ms", f"latency per hop on {target} (ms)", "quality_vs_latency.png",
                                      "on_front"),
                                     ("gmacs_per_s", "GMAC per second of audio", "quality_vs_macs.png",
                                      "on_front_macs")):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        inf = done[done["feasible"] != True]  # noqa: E712
        ax.scatter(feas[cost], feas["val_si_sdr_db"], c="tab:blue", s=22, label="feasible trials")
        if len(inf):
            ax.scatter(inf[cost], inf["val_si_sdr_db"], c="tab:gray", marker="x", s=22, label="over the limit")
        fr = df[df[flag]].sort_values(cost)
        ax.step(fr[cost], fr["val_si_sdr_db"], where="post", c="tab:red", lw=1.2)
        ax.scatter(fr[cost], fr["val_si_sdr_db"], facecolors="none", edgecolors="tab:red", s=70, label="front")
        if cost == "latency_ms":
            ax.axvline(c_ref, c="tab:gray", ls="--", lw=0.8, label=f"limit {c_ref:g} ms")
        ax.axhline(q_ref, c="k", ls=":", lw=0.8, label=f"noisy input {q_ref:.2f} dB")
        ax.set_xlabel(label)
        ax.set_ylabel("val SI-SDR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{settings['name']}: {len(done)} trials, {settings['kd']}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
    import pandas as pd
    t0 = pd.to_datetime(df["started"].dropna()).min()
    minutes = [(pd.Timestamp(c) - t0).total_seconds() / 60 for c in feas["completed"]]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.step(minutes, hv_hist, where="post", marker="o", ms=3)
    ax.set_xlabel("minutes since the first trial started (all workers)")
    ax.set_ylabel("hypervolume (dB x ms)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "hypervolume.png", dpi=110)
    plt.close(fig)

    summary = {"name": settings["name"], "target": target, "controller": settings["controller"],
               "kd": settings["kd"], "space": settings["space_def"], "trials_complete": int(len(done)),
               "trials_failed": int((df["state"] == "FAIL").sum()), "feasible": int(len(feas)),
               "front": front[["trial", "val_si_sdr_db", "val_pesq_wb", "latency_ms", "gmacs_per_s", "params"]]
               .to_dict("records"),
               "hypervolume": hv, "hypervolume_history": hv_hist, "hypervolume_minutes": minutes,
               "quality_ref_db": q_ref, "quality_ref_pesq_wb": attrs.get("quality_ref_pesq_wb"),
               "latency_ref_ms": c_ref,
               "latency_how": how, "latency_provenance": prov,
               "teacher": settings.get("teacher"), "teacher_sha256": attrs.get("teacher_sha256"),
               "val_clips": settings.get("val_clips"), "supernet": settings.get("supernet"),
               "like": settings.get("like")}
    listen = _listen(run, settings, front, out_dir, clips)
    summary["listening"] = [{"id": c["id"], **{r["label"]: {"si_sdr_db": r["si_sdr_db"], "pesq_wb": r["pesq_wb"]}
                                              for r in c["rows"]}} for c in listen["clips"]]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    _html(out_dir, settings, summary, df, front, listen)
    return summary


def _listen(run: Path, settings: dict, front, out_dir: Path, clips: int) -> dict:
    """The listening set of the front: each member whose checkpoint is here, on the first `clips` val clips."""
    from hwkd.models.checkpoint import load_model
    from hwkd.report.listen import listen_to
    from hwkd.search.pick import trial_checkpoint
    if clips <= 0:
        return {"clips": [], "missing": []}
    models, in_ch = {}, 1
    for _, row in front.iterrows():
        ck = trial_checkpoint(run, row)
        net = load_model(ck)[0] if ck.is_file() else None
        in_ch = net.cfg.in_channels if net is not None else in_ch
        models[f"trial {int(row['trial'])}"] = net
    return listen_to(models, settings.get("data"), "val", in_ch, clips, out_dir)


def _table(df, cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = "" if v != v else f"{v:.4g}"
            cells.append(f"<td>{html.escape(str(v if v is not None else ''))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html(out_dir: Path, settings: dict, s: dict, df, front, listen: dict) -> None:
    from hwkd.report.interactive import bokeh_head, ceil3, front_figures, hypervolume_figure
    from hwkd.report.listen import listening_html
    from hwkd.store import cell_float
    cfg_cols = [c for c in df.columns if c.startswith("cfg_") and df[c].nunique(dropna=False) > 1]
    cols = ["trial", *cfg_cols, "val_si_sdr_db", "val_pesq_wb", "rung", "latency_ms", "gmacs_per_s", "params"]
    failed = df[df["state"] == "FAIL"]
    done = df[df["state"] == "COMPLETE"]
    space = json.dumps(settings["space_def"]["params"])
    fscript, fdivs = front_figures(done, s["quality_ref_db"], s["quality_ref_pesq_wb"], s["latency_ref_ms"],
                                   s["target"], s["name"])
    hscript, hdiv = hypervolume_figure(s["hypervolume_minutes"], s["hypervolume_history"])
    picks = "".join(
        f"<tr><td>{int(r['trial'])}</td><td>{r['val_si_sdr_db']:.2f}</td><td>{_fmt(cell_float(r['val_pesq_wb']))}</td>"
        f"<td>{r['latency_ms']:.3f}</td><td><code>hwkd pick {html.escape(s['name'])} --max-latency-ms "
        f"{ceil3(r['latency_ms'])} --target {html.escape(s['target'])}</code></td></tr>"
        for _, r in front.iterrows())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hwkd search {html.escape(s['name'])}</title>
{bokeh_head()}
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} img.static{{max-width:49%}}
.plots{{display:flex;flex-wrap:wrap;gap:8px}}
#selected{{background:#f4f4f4;padding:6px;min-height:2.6em;font-size:13px}}
table.listen td{{text-align:left;vertical-align:middle}} td.l{{font-weight:bold}} img.spec{{height:150px}}
audio{{width:230px}}</style>
{fscript}{hscript}</head><body>
<h1>hwkd search <code>{html.escape(s['name'])}</code></h1>
<p>Target <b>{html.escape(s['target'])}</b>; controller {html.escape(s['controller'])}; KD {html.escape(s['kd'])};
{s['trials_complete']} complete, {s['trials_failed']} failed, {s['feasible']} within the latency limit.
Quality: SI-SDR on the validation split ({f"its first {s['val_clips']} clips" if s['val_clips'] else 'all clips'};
noisy input: <b>{s['quality_ref_db']:.2f} dB</b>); PESQ-WB on the first
{settings.get('val_pesq_clips', '?')} val clips (noisy input: <b>{_fmt(s['quality_ref_pesq_wb'])}</b>).
Teacher: {html.escape(Path(s['teacher'] or '?').name)}
(SHA-256 {html.escape((s['teacher_sha256'] or 'not recorded')[:16])}).
{('Candidates start from the supernet ' + html.escape(str(s['supernet'])) + '. ') if s['supernet'] else ''}
{('Re-targeted from search ' + html.escape(Path(s['like']).name) + ': its quality figures, size and latency taken '
  'anew here. ') if s['like'] else ''}
Hypervolume (SI-SDR x latency, reference: noisy input, {s['latency_ref_ms']:g} ms):
<b>{s['hypervolume']:.3f}</b> dB·ms.</p>
<p>Latency: {html.escape('; '.join(s['latency_how']))}{'<br>' if s['latency_provenance'] else ''}
{html.escape('; '.join(s['latency_provenance']))}</p>
<h2>Quality against cost</h2>
<p>Red: the front; blue: other trials within the limit; grey: over it. Dotted: the noisy input; dashed: the
latency limit ({s['latency_ref_ms']:g} ms per hop; drawn where it is within 1.5x of the slowest trial). Hover a
point for its figures and how its latency was obtained; click it to select it.</p>
<div class=plots>{''.join(fdivs)}</div>
<div id="selected">Click a point to select a trial.</div>
<h2>Front (SI-SDR vs latency) and how to pick each member</h2>
<table><tr><th>trial</th><th>val SI-SDR (dB)</th><th>val PESQ-WB</th><th>latency (ms per hop)</th><th>pick it</th></tr>
{picks}</table>
<h2>Listen</h2>
<p>The first validation clips: the noisy input, each front member's output (enhanced offline here) and the clean
reference, with spectrograms on one colour scale and per-clip figures.</p>
{listening_html(listen)}
<h2>Hypervolume over time</h2>{hdiv}
<h2>All trials</h2>{_table(df.sort_values('trial'), cols + ['state', 'feasible'])}
<h2>Failed trials</h2>{_table(failed, ['trial', 'error']) if len(failed) else '<p>none</p>'}
<h2>Static figures</h2>
<img class=static src="quality_vs_latency.png"> <img class=static src="quality_vs_macs.png"><br>
<img class=static src="hypervolume.png">
<p>Space: <code>{html.escape(space)}</code></p>
<p>Files: <a href="trials.csv">trials.csv</a>, <a href="front.csv">front.csv</a>,
<a href="summary.json">summary.json</a>. The run's study store opens in optuna-dashboard too (see README).</p>
</body></html>"""
    (out_dir / "index.html").write_text(page)


def _fmt(x) -> str:
    return "not recorded" if x is None else f"{x:.3f}"
