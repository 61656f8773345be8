"""Interactive plots for the HTML reports (Bokeh): hover shows a point's figures and how they were obtained, a
click selects it (the page shows the selected trial and its pick command). BokehJS is inlined into the page from
the installed package: a report opens with no network access."""

from __future__ import annotations


def bokeh_head() -> str:
    """The <script> tags of BokehJS (core only), inlined: about 1.3 MB, no request leaves the page."""
    from bokeh.resources import Resources
    return Resources(mode="inline", components=["bokeh"]).render_js()


def front_figures(done, q_ref: float, pesq_ref: float | None, c_ref: float, target: str, name: str) -> tuple:
    """done: complete trials (DataFrame of hwkd.store.collect + fronts). Three linked plots over one data
    source: val SI-SDR vs latency per hop, val PESQ-WB vs latency, val SI-SDR vs GMAC/s; the noisy input's
    SI-SDR and PESQ-WB as reference lines, the latency limit as a vertical one. Returns (script, [divs])."""
    from bokeh.embed import components
    from bokeh.models import ColumnDataSource, CustomJS, HoverTool, Span, TapTool
    from bokeh.plotting import figure

    cfg_cols = [c for c in done.columns if c.startswith("cfg_")]

    def cfg_text(r) -> str:
        return ", ".join(f"{c[4:]}={r[c]}" for c in cfg_cols if r[c] == r[c])

    rows = done.sort_values("trial")
    ok = list(rows["feasible"] == True)  # noqa: E712  (None: not recorded, counted as over the limit)
    src = ColumnDataSource({
        "trial": [int(t) for t in rows["trial"]],
        "sdr": [float(v) for v in rows["val_si_sdr_db"]],
        "pesq": [float(v) if v == v and v is not None else float("nan") for v in rows["val_pesq_wb"]],
        "lat": [float(v) for v in rows["latency_ms"]],
        "gmacs": [float(v) for v in rows["gmacs_per_s"]],
        "params": [int(v) for v in rows["params"]],
        "how": [str(v) for v in rows["latency_how"]],
        "config": [cfg_text(r) for _, r in rows.iterrows()],
        "front": ["front" if f else ("" if fe else "over the limit") for f, fe in zip(rows["on_front"], ok)],
        "color": ["#d62728" if f else ("#1f77b4" if fe else "#999999") for f, fe in zip(rows["on_front"], ok)],
        "size": [11 if f else 7 for f in rows["on_front"]],
        "pick": [f"hwkd pick {name} --max-latency-ms {ceil3(v)} --target {target}" for v in rows["latency_ms"]],
    })
    hover = HoverTool(tooltips=[("trial", "@trial @front"), ("config", "@config"), ("val SI-SDR", "@sdr{0.00} dB"),
                                ("val PESQ-WB", "@pesq{0.000}"), ("latency", "@lat{0.000} ms per hop"),
                                ("obtained", "@how"), ("cost", "@gmacs{0.000} GMAC/s, @params{0,0} params")])
    figs = []
    for x, y, xlabel, ylabel, ref in (
            ("lat", "sdr", f"latency per hop on {target} (ms)", "val SI-SDR (dB)", q_ref),
            ("lat", "pesq", f"latency per hop on {target} (ms)", "val PESQ-WB", pesq_ref),
            ("gmacs", "sdr", "GMAC per second of audio", "val SI-SDR (dB)", q_ref)):
        ys = [v for v in src.data[y] if v == v] + ([ref] if ref is not None else [])
        xs = list(src.data[x]) + ([c_ref] if x == "lat" and c_ref <= 1.5 * max(src.data[x]) else [])
        f = figure(width=360, height=300, tools=[hover, TapTool(), "box_zoom", "reset"], toolbar_location="above",
                   x_axis_label=xlabel, y_axis_label=ylabel, y_range=_padded(ys), x_range=_padded(xs + [0.0]))
        f.scatter(x, y, source=src, color="color", size="size", alpha=0.85, line_color="black", line_width=0.4)
        if ref is not None:
            f.add_layout(Span(location=ref, dimension="width", line_dash="dotted", line_color="black"))
        if x == "lat":
            f.add_layout(Span(location=c_ref, dimension="height", line_dash="dashed", line_color="#777777"))
        figs.append(f)
    src.selected.js_on_change("indices", CustomJS(args={"s": src}, code="""
        const el = document.getElementById('selected');
        const i = s.selected.indices[0];
        if (i === undefined || !el) { return; }
        const d = s.data;
        el.innerHTML = '<b>trial ' + d.trial[i] + '</b> ' + d.front[i] + ': ' + d.config[i] + '<br>val SI-SDR ' +
            d.sdr[i].toFixed(2) + ' dB, PESQ-WB ' + d.pesq[i].toFixed(3) + ', ' + d.lat[i].toFixed(3) +
            ' ms per hop (' + d.how[i] + '), ' + d.gmacs[i].toFixed(3) + ' GMAC/s<br>pick it: <code>' +
            d.pick[i] + '</code>';
    """))
    script, divs = components(figs)
    return script, list(divs)


def hypervolume_figure(minutes: list, hv: list) -> tuple:
    """Hypervolume after each completed feasible trial, against minutes since the first trial started."""
    from bokeh.embed import components
    from bokeh.models import HoverTool
    from bokeh.plotting import figure
    f = figure(width=540, height=240, tools=[HoverTool(tooltips=[("minute", "@x{0.0}"), ("hypervolume", "@y{0.000}")]),
                                               "box_zoom", "reset"],
               x_axis_label="minutes since the first trial started (all workers)",
               y_axis_label="hypervolume (dB x ms)")
    f.step(minutes, hv, mode="after")
    f.scatter(minutes, hv, size=5)
    script, div = components(f)
    return script, div


def _padded(values: list) -> tuple:
    """A range that shows every value (the reference lines included) with 6 % room on each side."""
    lo, hi = min(values), max(values)
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 0.06, 0.1)
    return lo - pad, hi + pad


def ceil3(v: float) -> str:
    """A latency limit that admits v: v rounded up to the microsecond."""
    import math
    return f"{math.ceil(float(v) * 1000) / 1000:.3f}"
