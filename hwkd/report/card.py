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
    path = out / "model_card.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _lam(training: dict) -> str:
    lam = training["lambda"]
    return ("not recorded" if lam is None else f"{lam:.4g}") + f", {training['lambda_rule']}"
