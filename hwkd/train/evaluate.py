"""Enhance pairs with a model and score noisy and enhanced audio against the clean targets, overall and by
condition (noise family, SNR band, reverberation) where the dataset's manifest records them.

Why by condition: a mean over a test split hides where a model fails. On the embedded corpus the 60-minute
students and the shipped teacher gain +7 to +17 dB SI-SDR on white, blue and brown noise and under +2.5 dB on
babble and on the test split's unseen ambient loops (results/by_condition.json); the mean says neither.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hwkd.data.layouts import Pair
from hwkd.metrics import BASE_METRICS, DNSMOS_METRICS, score_pairs, summarize
from hwkd.metrics.quality import load_channel_and_reference
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.enhancer import Enhancer, enhance_file


def evaluate_pairs(model: DPDCRN, pairs: list[Pair], jobs: int | None = None, dnsmos: bool = False,
                   save_dir: Path | None = None, progress: bool = True, noisy_rows: list | None = None) -> dict:
    """Returns {"noisy": summary, "enhanced": summary, "rows": {...}}; the input scored is channel 0.
    `noisy_rows`: the noisy input's scores of the same pairs from an earlier call (not scored again)."""
    enhancer = Enhancer(model).eval()
    with tempfile.TemporaryDirectory(prefix="hwkd-eval-") as tmp:
        out_dir = Path(save_dir) if save_dir else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(pairs), unit="utt", desc="enhance", dynamic_ncols=True)
        for p in pairs:
            # chunk by chunk (bounded memory for any length); float: no requantisation
            enhance_file(enhancer, p.noisy, out_dir / p.noisy.name, subtype="FLOAT")
            if bar:
                bar.update()
        if bar:
            bar.close()
        metrics = BASE_METRICS + (DNSMOS_METRICS if dnsmos else ())
        noisy = noisy_rows if noisy_rows is not None else score_pairs(
            [((p.noisy, 0), p.clean, p.id) for p in pairs], load_channel_and_reference, jobs=jobs, dnsmos=dnsmos,
            progress=progress, desc="metrics noisy")
        enh = score_pairs([(out_dir / p.noisy.name, p.clean, p.id) for p in pairs], load_channel_and_reference,
                          jobs=jobs, dnsmos=dnsmos, progress=progress, desc="metrics enhanced")
    return {"noisy": summarize(noisy, metrics), "enhanced": summarize(enh, metrics),
            "by_condition": by_condition(conditions(pairs), noisy, enh, metrics),
            "rows": {"noisy": noisy, "enhanced": enh}}


def paired_difference(rows_a: list[dict], rows_b: list[dict], metrics) -> dict:
    """Per metric, the mean over the utterances of (A - B) with its paired 95 % CI (rows in the same pair order;
    an utterance where either score is missing is left out)."""
    from hwkd.metrics.quality import mean_ci
    return {k: mean_ci([a[k] - b[k] for a, b in zip(rows_a, rows_b, strict=True)
                        if a.get(k) is not None and b.get(k) is not None]) for k in metrics}


SNR_BANDS_DB = (0.0, 5.0, 10.0, 15.0, 20.0)    # band edges: "< 0", "0 to 5", .., ">= 20"
RT60_BANDS_S = (0.3, 0.6)                      # Ambisonics rooms: "< 0.3 s", "0.3 to 0.6 s", ">= 0.6 s"


def _band(v: float, edges: tuple, unit: str) -> str:
    if v < edges[0]:
        return f"< {edges[0]:g} {unit}"
    for lo, hi in zip(edges, edges[1:]):
        if v < hi:
            return f"{lo:g} to {hi:g} {unit}"
    return f">= {edges[-1]:g} {unit}"


def conditions(pairs: list[Pair]) -> list[dict]:
    """Each pair's recorded condition {"noise": kind, "snr": band, "rt60": band} from its split folder's
    manifest.jsonl (an hwkd corpus, `hwkd data synth`); {} for a pair no manifest describes (other layouts)."""
    manifests: dict[Path, dict] = {}
    out = []
    for p in pairs:
        split_dir = p.noisy.parent.parent
        if split_dir not in manifests:
            recs = {}
            man = split_dir / "manifest.jsonl"
            if man.is_file():
                for line in man.read_text().splitlines():
                    try:
                        r = json.loads(line)
                        recs[(split_dir / r["noisy"]).resolve()] = r
                    except (ValueError, KeyError, TypeError):   # a damaged line describes nothing
                        continue
            manifests[split_dir] = recs
        r = manifests[split_dir].get(p.noisy.resolve(), {})
        c = {}
        if isinstance(r.get("noise_kind"), str):
            c["noise"] = r["noise_kind"]
        if isinstance(r.get("snr_db"), (int, float)) and math.isfinite(r["snr_db"]):
            c["snr"] = _band(float(r["snr_db"]), SNR_BANDS_DB, "dB")
        rt60 = (r.get("room") or {}).get("rt60_s") if isinstance(r.get("room"), dict) else None
        if isinstance(rt60, (int, float)) and math.isfinite(rt60):
            c["rt60"] = _band(float(rt60), RT60_BANDS_S, "s")
        out.append(c)
    return out


def by_condition(conds: list[dict], noisy: list[dict], enh: list[dict], metrics) -> dict:
    """{"noise" | "snr" | "rt60": {value: {"n", metric: {"noisy", "enhanced", "gain"} (means)}}} over the
    clips scored on both sides; {} when no clip has a recorded condition."""
    out: dict = {}
    for key in ("noise", "snr", "rt60"):
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(conds):
            if key in c:
                groups.setdefault(c[key], []).append(i)
        if not groups:
            continue
        table = {}
        for value, idx in sorted(groups.items(), key=lambda kv: _order(kv[0])):
            row: dict = {"n": len(idx)}
            for m in metrics:
                both = [(noisy[i][m], enh[i][m]) for i in idx
                        if noisy[i].get(m) is not None and enh[i].get(m) is not None]
                if both:
                    a = sum(x for x, _ in both) / len(both)
                    b = sum(y for _, y in both) / len(both)
                    row[m] = {"noisy": a, "enhanced": b, "gain": b - a, "n": len(both)}
            table[value] = row
        out[key] = table
    return out


def _order(label: str):
    """Bands in numeric order ("< 0 dB" first, ">= 20 dB" last), names alphabetically."""
    head = label.split()
    if head[0] == "<":
        return (0, float("-inf"), label)
    if head[0] == ">=":
        return (0, float("inf"), label)
    try:
        return (0, float(head[0]), label)
    except ValueError:
        return (1, 0.0, label)
