"""Clips to listen to and their spectrograms, for the reports: the noisy input, each model's output and the clean
reference of a few validation utterances, as FLAC files (16 kHz, lossless, small) and log-magnitude spectrogram
images on one colour scale, with their per-clip SI-SDR and PESQ-WB. Models are enhanced offline here (a causal
model's offline output equals its streamed one up to float rounding)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from hwkd import SAMPLE_RATE

SPEC_DB_RANGE = (-100.0, -20.0)      # the colour scale of every spectrogram (dBFS per bin), so panels compare


def write_clip(path: Path, x: np.ndarray) -> None:
    """A mono clip as 16-kHz FLAC (PCM16, lossless; browsers play it), clipped to [-1, 1]."""
    import soundfile as sf
    sf.write(str(path), np.clip(np.asarray(x, np.float32), -1.0, 1.0), SAMPLE_RATE, format="FLAC",
             subtype="PCM_16")


def spectrogram_image(path: Path, x: np.ndarray, title: str) -> None:
    """A small log-magnitude spectrogram (512-point STFT, hop 128, Hann) on the fixed scale SPEC_DB_RANGE, as JPEG
    (a tenth of a PNG of the same noisy image)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import stft
    f, t, z = stft(np.asarray(x, np.float64), fs=SAMPLE_RATE, nperseg=512, noverlap=384)
    db = 20 * np.log10(np.abs(z) + 1e-10)
    fig, ax = plt.subplots(figsize=(3.4, 1.5), dpi=100)
    ax.pcolormesh(t, f / 1000, db, vmin=SPEC_DB_RANGE[0], vmax=SPEC_DB_RANGE[1], cmap="magma", shading="auto",
                  rasterized=True)
    ax.set_title(title, fontsize=7)
    ax.set_ylabel("kHz", fontsize=6)
    ax.tick_params(labelsize=6)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100, pil_kwargs={"quality": 80})
    plt.close(fig)


def listening_set(models: dict, pairs: list, out_dir: Path, in_channels: int = 1, sub: str = "clips") -> dict:
    """models: label -> DPDCRN (None: no checkpoint here, left out with a note); pairs: the utterances (Pair).
    Writes out_dir/SUB/*.flac and *.jpg; returns {"clips": [{id, rows: [{label, audio, image, si_sdr_db,
    pesq_wb}]}], "missing": [labels]}: rows are the noisy input, each model, the clean reference."""
    from hwkd.audio.io import read_audio
    from hwkd.metrics.quality import pesq_wb, si_sdr
    from hwkd.models.enhancer import Enhancer
    cdir = Path(out_dir) / sub
    cdir.mkdir(parents=True, exist_ok=True)
    enhancers = {k: Enhancer(m).eval() for k, m in models.items() if m is not None}
    out = {"clips": [], "missing": [k for k, m in models.items() if m is None]}
    for i, p in enumerate(pairs):
        noisy, _ = read_audio(p.noisy, sample_rate=SAMPLE_RATE, channels=in_channels)
        clean = read_audio(p.clean, sample_rate=SAMPLE_RATE, channels=1)[0][0]
        signals = [("noisy input", noisy[0])]
        signals += [(k, e.enhance_array(noisy)) for k, e in enhancers.items()]
        signals.append(("clean reference", clean))
        rows = []
        for j, (label, x) in enumerate(signals):
            stem = f"clip{i}-{j}"
            write_clip(cdir / f"{stem}.flac", x)
            spectrogram_image(cdir / f"{stem}.jpg", x, f"{label} — {p.id}")
            ref = label == "clean reference"
            rows.append({"label": label, "audio": f"{sub}/{stem}.flac", "image": f"{sub}/{stem}.jpg",
                         "si_sdr_db": None if ref else float(si_sdr(x, clean)),
                         "pesq_wb": None if ref else _pesq(pesq_wb, x, clean)})
        out["clips"].append({"id": p.id, "rows": rows})
    return out



def listen_to(models: dict, source, split: str, in_channels: int, clips: int, out_dir: Path,
              sub: str = "clips") -> dict:
    """listening_set on the first `clips` utterances of `split` of a dataset (`source`); where the dataset or the
    split is not on this machine, no clips and a note saying so (the report is written without them)."""
    from hwkd.data.datasets import split_pairs
    from hwkd.errors import HwkdError
    if clips <= 0 or not source:
        return {"clips": [], "missing": []}
    try:
        pairs = split_pairs(source, split, channels=in_channels, limit=clips)
    except HwkdError:
        return {"clips": [], "missing": [], "note": f"the {split} clips of {source} are not on this machine"}
    return listening_set(models, pairs, out_dir, in_channels=in_channels, sub=sub)

def _pesq(fn, est: np.ndarray, ref: np.ndarray) -> float | None:
    try:
        return float(fn(est, ref))
    except Exception:  # noqa: BLE001  (PESQ refuses silent or too short clips: the cell stays empty)
        return None


def listening_html(ls: dict) -> str:
    """The listening section: a table per clip, a row per signal with its player, spectrogram and figures."""
    if not ls["clips"]:
        return f"<p>No clips to listen to{': ' + html.escape(ls['note']) if ls.get('note') else ''}.</p>"
    parts = []
    for clip in ls["clips"]:
        rows = []
        for r in clip["rows"]:
            figs = ("reference" if r["si_sdr_db"] is None else
                    f"SI-SDR {r['si_sdr_db']:.2f} dB" + (f"<br>PESQ-WB {r['pesq_wb']:.3f}" if r["pesq_wb"] else ""))
            rows.append(f"<tr><td class=l>{html.escape(r['label'])}</td>"
                        f"<td><audio controls preload=\"metadata\" src=\"{r['audio']}\"></audio></td>"
                        f"<td><img class=spec src=\"{r['image']}\" alt=\"spectrogram\"></td><td>{figs}</td></tr>")
        parts.append(f"<h3>clip {html.escape(clip['id'])}</h3><table class=listen>{''.join(rows)}</table>")
    if ls["missing"]:
        parts.append("<p>Not on this machine (no checkpoint to enhance with): "
                     + html.escape(", ".join(ls["missing"])) + ".</p>")
    return "\n".join(parts)
