"""`hwkd pick RUN --max-latency-ms X --target T`: export the best student within a latency limit.

The pick is the complete trial with the highest val SI-SDR whose per-hop latency on the run's target is at
most X (and within the run's own constraint); it is always a member of the front. The folder holds
model.pt (the checkpoint: `hwkd enhance DIR/model.pt in.wav out.wav`), offline.onnx (dynamic time axis),
step.onnx (streaming, states in and out; causal models), OpenVINO IR of both where they pass the parity
check, and card.json with the figures and how each was obtained (hwkd.report.card writes model_card.md from it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hwkd import SAMPLE_RATE
from hwkd.audio.io import write_text_atomic
from hwkd.errors import HwkdError
from hwkd.store import cell_float


def pick(run: Path, settings: dict, max_latency_ms: float | None, target: str | None, out: Path | None,
         eval_clips: int = 20) -> dict:
    """out: default picks/NAME-trialN in the current directory. eval_clips: the first val utterances the pick is
    scored on (every metric, noisy input beside it; 0: none), where the run's dataset is on this machine."""
    from hwkd.audio.io import check_output
    from hwkd.hw.export import export_all
    from hwkd.models.checkpoint import load_model, save_checkpoint
    from hwkd.search.pareto import fronts
    from hwkd.store import collect
    if target and target != settings["target"]:
        raise HwkdError(f"search {settings['name']} ran on target {settings['target']}, not {target}",
                        f"use --target {settings['target']}, or pick from a search on {target}")
    df, attrs = collect(run, settings)
    if df.empty:
        raise HwkdError(f"search {settings['name']} has no trials yet", "run or resume it first")
    df = fronts(df)
    ok = df[(df["state"] == "COMPLETE") & (df["feasible"] == True)]  # noqa: E712
    if max_latency_ms is not None:
        ok = ok[ok["latency_ms"] <= max_latency_ms]
    if ok.empty:
        fastest = df[df["state"] == "COMPLETE"]["latency_ms"].min()
        raise HwkdError(f"no student of {settings['name']} runs within {max_latency_ms} ms per hop on "
                        f"{settings['target']} (fastest: {fastest:.3f} ms)",
                        "raise --max-latency-ms, or search a space with smaller students")
    row = ok.sort_values(["val_si_sdr_db", "latency_ms"], ascending=[False, True]).iloc[0]
    ckpt = trial_checkpoint(run, row)
    if not ckpt.is_file():
        raise HwkdError(f"trial {row['trial']}'s checkpoint {ckpt} is not on this machine (worker {row['worker']})",
                        "run hwkd pick on the machine whose worker trained it, or copy its run folder here")
    out = check_output(Path(out) if out else Path("picks") / f"{settings['name']}-trial{int(row['trial'])}",
                       folder=True, what="--out")
    net, ck = load_model(ckpt)                                 # a damaged checkpoint: an error, no folder made
    out.mkdir(parents=True, exist_ok=True)
    # the student alone (the training checkpoint also holds the distiller's modules and the optimizer)
    save_checkpoint(out / "model.pt", net, meta={**(ck.get("meta") or {}), "picked_from": str(ckpt)})
    ex = export_all(net.eval(), out, openvino=True)
    import shutil
    standalone = Path(__file__).resolve().parents[1] / "assets" / "enhance_onnx.py"
    shutil.copyfile(standalone, out / "enhance_onnx.py")        # numpy + onnxruntime, no hwkd (see its doc)
    evaluation = _evaluate(net, settings, eval_clips)
    files = {"checkpoint": "model.pt", "standalone_script": "enhance_onnx.py", "offline_onnx": ex.offline_onnx.name,
             "offline_ir": ex.offline_ir.name if ex.offline_ir else None,
             "step_onnx": ex.step_onnx.name if ex.step_onnx else None,
             "step_ir": ex.step_ir.name if ex.step_ir else None}
    hi_ms = cell_float(row.get("latency_hi_ms"))          # the top of a calibrated prediction's band (None: no band)
    card = {"name": f"{settings['name']}-trial{int(row['trial'])}", "run": settings["name"],
            "trial": int(row["trial"]), "target": settings["target"], "config": net.cfg.to_dict(),
            "params": int(row["params"]), "gmacs_per_s": float(row["gmacs_per_s"]),
            "quality": {"val_si_sdr_db": float(row["val_si_sdr_db"]),
                        "val_pesq_wb": cell_float(row["val_pesq_wb"]),
                        "noisy_val_si_sdr_db": attrs["quality_ref"],
                        "noisy_val_pesq_wb": attrs.get("quality_ref_pesq_wb"), "split": "val",
                        "data": settings["data"]},
            "latency": {"per_hop_ms": float(row["latency_ms"]),
                        "p90_per_hop_ms": cell_float(row["latency_p90_ms"]),
                        "band_per_hop_ms": [cell_float(row.get("latency_lo_ms")), hi_ms],
                        "limit_ms": max_latency_ms,
                        "may_exceed_limit": bool(max_latency_ms is not None and hi_ms and hi_ms > max_latency_ms),
                        "hop_ms": net.cfg.hop / SAMPLE_RATE * 1e3, "how": row["latency_how"],
                        "provenance": row["latency_provenance"] if isinstance(row["latency_provenance"], str)
                        else None},
            "training": {"kd": settings["kd"], "lambda": cell_float(row.get("kd_lambda")) or settings["lam"],
                         "lambda_rule": "fixed" if settings["lam"] is not None else "balanced (gradient ratio)",
                         "teacher": settings["teacher"],
                         "steps": int(row["total_steps"]), "batch_size": settings["batch_size"],
                         "segment_s": settings["segment_s"]},
            "evaluation": evaluation,
            "on_front": bool(row["on_front"]), "files": files, "export_parity_max_abs": ex.parity,
            "export_refused": ex.refused, "folder": str(out)}
    write_text_atomic(out / "card.json", json.dumps(card, indent=1, default=str))
    os.chmod(out / "card.json", 0o644)
    return card


def _evaluate(net, settings: dict, clips: int) -> dict | None:
    """The pick and the noisy input on the first `clips` val utterances, every metric (mean ± 95 % CI, gain)."""
    if clips <= 0 or not settings.get("data"):
        return None
    from hwkd.data.datasets import split_pairs
    from hwkd.metrics.quality import BASE_METRICS
    from hwkd.train.evaluate import evaluate_pairs
    try:
        pairs = split_pairs(settings["data"], "val", channels=net.cfg.in_channels, limit=clips)
    except HwkdError:                 # the run's dataset is not on this machine: the card says so
        return None
    ev = evaluate_pairs(net, pairs, progress=False)
    return {"split": "val", "utterances": len(pairs), "data": settings["data"],
            "metrics": {m: {"noisy": ev["noisy"][m], "enhanced": ev["enhanced"][m],
                            "gain": (ev["enhanced"][m]["mean"] - ev["noisy"][m]["mean"])
                            if ev["enhanced"][m]["mean"] is not None and ev["noisy"][m]["mean"] is not None
                            else None} for m in BASE_METRICS}}


def trial_checkpoint(run: Path, row) -> Path:
    """The trial's checkpoint in this run folder (trials/KEY/rungN/best.pt, where a copied or moved run folder has
    it), else where its worker wrote it (the path recorded in the store)."""
    recorded = Path(row["checkpoint"])
    here = Path(run) / "trials" / str(row["key"]) / recorded.parent.name / recorded.name
    return here if here.is_file() else recorded
