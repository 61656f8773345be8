"""Enhance pairs with a model and score noisy and enhanced audio against the clean targets."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hwkd.data.layouts import Pair
from hwkd.metrics import BASE_METRICS, DNSMOS_METRICS, score_pairs, summarize
from hwkd.metrics.quality import load_channel_and_reference
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.enhancer import Enhancer, enhance_file


def evaluate_pairs(model: DPDCRN, pairs: list[Pair], jobs: int | None = None, dnsmos: bool = False,
                   save_dir: Path | None = None, progress: bool = True) -> dict:
    """Returns {"noisy": summary, "enhanced": summary, "rows": {...}}; the input scored is channel 0."""
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
        noisy = score_pairs([((p.noisy, 0), p.clean, p.id) for p in pairs], load_channel_and_reference,
                            jobs=jobs, dnsmos=dnsmos, progress=progress, desc="metrics noisy")
        enh = score_pairs([(out_dir / p.noisy.name, p.clean, p.id) for p in pairs], load_channel_and_reference,
                          jobs=jobs, dnsmos=dnsmos, progress=progress, desc="metrics enhanced")
    return {"noisy": summarize(noisy, metrics), "enhanced": summarize(enh, metrics),
            "rows": {"noisy": noisy, "enhanced": enh}}
