"""A picked student's model card (model_card.md) from its card.json record (hwkd.search.pick)."""

from __future__ import annotations

from pathlib import Path

from hwkd.models.dpdcrn import DPDCRNConfig


def write_model_card(card: dict, settings: dict) -> Path:
    """Writes FOLDER/model_card.md for a pick's card (settings: the search run's). Returns its path."""
    cfg = DPDCRNConfig.from_dict(card["config"])
    max_latency_ms = card["latency"]["limit_ms"]
    out = Path(card["folder"])
    files = card["files"]
    refused = card["export_refused"]
    q = card["quality"]
    md = [f"# {card['name']}", "",
          f"DPDCRN student from `hwkd search` run `{settings['name']}` (trial {card['trial']}) for target "
          f"`{settings['target']}`, distilled from `{Path(settings['teacher']).name}` with {settings['kd']} "
          f"(λ {_lam(card['training'])}, {card['training']['steps']} steps of batch {settings['batch_size']} x "
          f"{settings['segment_s']:g} s).", "",
          f"- architecture: C={cfg.channels}, L={cfg.layers}, D={cfg.depth}, heads={cfg.heads}, "
          f"GRU hidden={cfg.hidden}, intra GRU {'bi' if cfg.intra_bidirectional else 'uni'}directional, "
          f"{'causal (streaming)' if cfg.causal else 'non-causal'}, time attention {cfg.time_attention}, "
          f"{cfg.in_channels} input channel(s), hop {cfg.hop}",
          f"- size: {card['params']:,} parameters, {card['gmacs_per_s']:.3f} GMAC per second of audio",
          f"- quality (validation split): SI-SDR {card['quality']['val_si_sdr_db']:.2f} dB "
          f"(noisy input {card['quality']['noisy_val_si_sdr_db']:.2f} dB)"
          + (f", PESQ-WB {card['quality']['val_pesq_wb']:.3f} on the first {settings['val_pesq_clips']} val clips"
             + (f" (noisy input {q['noisy_val_pesq_wb']:.3f})" if q["noisy_val_pesq_wb"] else "")
             if card["quality"]["val_pesq_wb"] else ""),
          f"- latency per hop on {settings['target']}: {card['latency']['per_hop_ms']:.3f} ms "
          f"(hop {card['latency']['hop_ms']:g} ms) — {card['latency']['how']}"
          + (f"; {card['latency']['provenance']}" if card["latency"]["provenance"] else ""),
          *([f"- **the predicted band ({card['latency']['band_per_hop_ms'][0]:.3f}–"
             f"{card['latency']['band_per_hop_ms'][1]:.3f} ms) reaches past the limit of {max_latency_ms:g} ms**: "
             f"measure it on the device (`hwkd profile --target {settings['target']}`) before relying on it"]
            if card["latency"]["may_exceed_limit"] else []),
          "", "Files: " + ", ".join(f"`{v}`" for v in files.values() if v) + " (OpenVINO IR: each .xml with its .bin)"
          + (f" (refused by the parity check: {', '.join(refused)})" if refused else ""), "",
          f"Run it: `hwkd enhance {out / 'model.pt'} in.wav out.wav" + (" --streaming`" if cfg.causal else "`")]
    ev = card.get("evaluation")
    md += ["", "## Quality beside the noisy input", ""]
    if ev:
        md += [f"The first {ev['utterances']} utterances of the {ev['split']} split (mean ± 95 % CI):", "",
               "| metric | noisy input | this model | gain |", "|---|---|---|---|"]
        md += [f"| {m} | {_ci(v['noisy'])} | {_ci(v['enhanced'])} | {_signed(v['gain'])} |"
               for m, v in ev["metrics"].items()]
    else:
        md.append("Not evaluated: the search's dataset is not on the machine that picked it.")
    io = interfaces(out, cfg)
    md += ["", "## Run it without hwkd", "",
           "`python enhance_onnx.py in.wav out.wav" + (" [--streaming]`" if cfg.causal else "`")
           + " in this folder needs numpy and onnxruntime only; its docstring is the reference for what hwkd does "
           f"around the network. STFT: n_fft {cfg.n_fft}, hop {cfg.hop} (16 kHz), square-root periodic Hann "
           "windows, the signal left-padded with n_fft - hop zeros; " + mask_sentence(cfg), "",
           "| model | input / output | name | shape |", "|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | `{r[2]}` | {r[3]} |" for r in io]
    path = out / "model_card.md"
    path.write_text("\n".join(md) + "\n")
    return path


def mask_sentence(cfg) -> str:
    """How the network's mask makes the output (hwkd.models.dpdcrn.apply_mask), in one sentence."""
    if cfg.mask_mode == "filter-sum":
        return (f"the mask holds one (real, imaginary) pair per input channel ({cfg.mask_channels} channels), each "
                "applied in polar form to its channel's spectrum, and the masked channels are summed.")
    if cfg.mask_mode == "steered":
        return ("channels 0 and 1 of the mask are applied in polar form to a beam, the sum of the input channels "
                "weighted by channels 2 to 5 (the same in every bin: a hypercardioid the network steers at the "
                "talker).")
    return "the mask is applied in polar form to input channel 0."


def interfaces(folder: Path, cfg: DPDCRNConfig) -> list[tuple]:
    """(model file, input/output, name, shape) of the exported graphs, read from the ONNX files."""
    import onnx
    rows = []
    for name in ("offline.onnx", "step.onnx"):
        f = Path(folder) / name
        if not f.is_file():
            continue
        g = onnx.load(str(f), load_external_data=False).graph
        for v in g.input:
            dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]
            rows.append((name, "input", v.name, "[" + ", ".join(dims) + "]"))
        for v in g.output:         # (the exporter's shape inference names output axes oddly: say what they are)
            shape = (f"[1, {cfg.mask_channels}, {'frames' if name == 'offline.onnx' else 1}, {cfg.n_fft // 2 + 1}]"
                     if v.name == "mask"
                     else f"as `{v.name[4:]}`" + (" plus one frame (past)" if v.name.startswith("new_attn_kv") else ""))
            rows.append((name, "output", v.name, shape))
    return rows


def write_card_html(card: dict, settings: dict, clips: int = 2) -> Path:
    """FOLDER/model_card.html: the card's figures, its quality beside the noisy input's on every metric, the
    first `clips` val clips to listen to (noisy, this model, clean; spectrograms) and how to run the ONNX files
    without hwkd. Returns its path."""
    import html

    from hwkd.report.listen import listen_to, listening_html
    out = Path(card["folder"])
    cfg = DPDCRNConfig.from_dict(card["config"])
    from hwkd.models.checkpoint import load_model
    listen = listen_to({"this model": load_model(out / "model.pt")[0]}, settings.get("data"), "val",
                       cfg.in_channels, clips, out)
    md = (out / "model_card.md").read_text() if (out / "model_card.md").is_file() else ""
    ev = card.get("evaluation")
    table = ("<p>Not evaluated: the search's dataset is not on the machine that picked it.</p>" if not ev else
             f"<p>The first {ev['utterances']} utterances of the {ev['split']} split (mean ± 95 % CI).</p><table>"
             "<tr><th>metric</th><th>noisy input</th><th>this model</th><th>gain</th></tr>"
             + "".join(f"<tr><td>{m}</td><td>{_ci(v['noisy'])}</td><td>{_ci(v['enhanced'])}</td>"
                       f"<td>{_signed(v['gain'])}</td></tr>" for m, v in ev["metrics"].items()) + "</table>")
    io = "".join(f"<tr><td>{a}</td><td>{b}</td><td><code>{html.escape(c)}</code></td><td>{d}</td></tr>"
                 for a, b, c, d in interfaces(out, cfg))
    summary = md.split("## Quality beside the noisy input")[0].split("\n", 2)[-1]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(card['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px}} table.listen td{{vertical-align:middle}} img.spec{{height:150px}}
audio{{width:230px}} pre{{background:#f4f4f4;padding:6px;white-space:pre-wrap}}</style></head><body>
<h1>{html.escape(card['name'])}</h1>
<pre>{html.escape(summary.strip())}</pre>
<h2>Quality beside the noisy input</h2>{table}
<h2>Listen</h2>{listening_html(listen)}
<h2>Run it without hwkd</h2>
<p><code>python enhance_onnx.py in.wav out.wav{' [--streaming]' if cfg.causal else ''}</code> in this folder needs
numpy and onnxruntime only (its docstring describes what hwkd does around the network). STFT: n_fft {cfg.n_fft},
hop {cfg.hop} at 16 kHz, square-root periodic Hann windows, the signal left-padded with n_fft - hop zeros;
{mask_sentence(cfg)}</p>
<table><tr><th>model</th><th>input / output</th><th>name</th><th>shape</th></tr>{io}</table>
</body></html>"""
    path = out / "model_card.html"
    path.write_text(page)
    return path


def _ci(s: dict) -> str:
    if s.get("mean") is None:
        return "-"
    return f"{s['mean']:.3f}" + (f" ± {s['ci95']:.3f}" if s.get("ci95") is not None else "")


def _signed(v) -> str:
    return "-" if v is None else f"{v:+.3f}"


def _lam(training: dict) -> str:
    lam = training["lambda"]
    return ("not recorded" if lam is None else f"{lam:.4g}") + f", {training['lambda_rule']}"
