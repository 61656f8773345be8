"""Speech quality metrics, per clip, in parallel processes.

- PESQ wide band (ITU-T P.862.2) from the `pesq` package, 16 kHz;
- STOI and eSTOI from `pystoi`;
- SI-SDR (Le Roux et al., 2019) with the zero-mean convention: both signals have their mean removed
  first, then SI-SDR = 10 log10(|a s|^2 / |a s - y|^2), a = <y, s> / |s|^2;
- DNSMOS P.835 (SIG, BAK, OVRL) and P.808 from the ONNX models the `speechmos` package ships (offline);
  a clip shorter than the model's 9.01 s window is repeated to fill it, as speechmos does.

A clip that cannot be scored (silent reference, shorter than MIN_SECONDS, NaN samples, a metric error)
gets a status and empty values instead of failing the batch.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from hwkd import SAMPLE_RATE as SR

MIN_SECONDS = 0.5
BASE_METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr_db")
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


def si_sdr(est: np.ndarray, ref: np.ndarray, zero_mean: bool = True, eps: float = 1e-12) -> float:
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if zero_mean:
        est = est - est.mean()
        ref = ref - ref.mean()
    a = np.dot(est, ref) / (np.dot(ref, ref) + eps)
    target = a * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def pesq_wb(est: np.ndarray, ref: np.ndarray, sr: int = SR) -> float:
    """PESQ wide band (P.862.2) via the `pesq` package; raises on clips it cannot score."""
    from pesq import pesq
    return float(pesq(sr, np.asarray(ref, dtype=np.float64), np.asarray(est, dtype=np.float64), "wb"))


_dnsmos = None


def _dnsmos_model():
    """speechmos's DNSMOS with its two ONNX sessions limited to one thread (we parallelise over clips)."""
    global _dnsmos
    if _dnsmos is None:
        import onnxruntime as ort
        from speechmos import dnsmos as sm

        base = os.path.dirname(sm.__file__)
        primary = os.path.join(base, "dnsmos_models", "sig_bak_ovr.onnx")
        p808 = os.path.join(base, "dnsmos_models", "model_v8.onnx")
        model = sm.DNSMOS.__new__(sm.DNSMOS)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        model.primary_model_path = primary
        model.onnx_sess = ort.InferenceSession(primary, opts, providers=["CPUExecutionProvider"])
        model.p808_onnx_sess = ort.InferenceSession(p808, opts, providers=["CPUExecutionProvider"])
        _dnsmos = model
    return _dnsmos


def score_clip(est: np.ndarray, ref: np.ndarray, sr: int = SR, dnsmos: bool = False) -> dict:
    """All metrics of one enhanced (or noisy) clip against its clean reference, mono 16 kHz.

    Returns {metric: value or None, ..., "status": "ok" | reason}.
    """
    names = BASE_METRICS + (DNSMOS_METRICS if dnsmos else ())
    row: dict = {m: None for m in names}
    est = np.asarray(est, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if sr != SR:
        row["status"] = f"wrong_rate: {sr} Hz (metrics need {SR} Hz)"
        return row
    n = min(len(est), len(ref))
    est, ref = est[:n], ref[:n]
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(ref))):
        row["status"] = "nan_input"
        return row
    if n < MIN_SECONDS * sr:
        row["status"] = f"too_short: {n / sr:.3f} s < {MIN_SECONDS} s"
        return row
    if not np.any(np.abs(ref) > 1e-7):
        row["status"] = "silent_reference"
        return row
    errors = []

    from pystoi import stoi
    try:
        row["pesq_wb"] = pesq_wb(est, ref, sr)
    except Exception as exc:  # pesq raises its own classes (NoUtterancesError, BufferTooShortError)
        errors.append(f"pesq: {type(exc).__name__}")
    for key, ext in (("stoi", False), ("estoi", True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                v = float(stoi(ref, est, sr, extended=ext))
            except Exception as exc:
                errors.append(f"{key}: {type(exc).__name__}")
                continue
        if any("Not enough STFT frames" in str(w.message) for w in caught):
            errors.append(f"{key}: too little speech after silence removal")
        else:
            row[key] = v
    row["si_sdr_db"] = si_sdr(est, ref)
    if dnsmos:
        try:
            peak = np.abs(est).max()
            x = est / peak if peak > 1 else est
            d = _dnsmos_model()(x.astype(np.float32), sr, False)
            row.update({"dnsmos_sig": float(d["sig_mos"]), "dnsmos_bak": float(d["bak_mos"]),
                        "dnsmos_ovrl": float(d["ovrl_mos"]), "dnsmos_p808": float(d["p808_mos"])})
        except Exception as exc:
            errors.append(f"dnsmos: {type(exc).__name__}")
    row["status"] = "ok" if not errors else "partial: " + "; ".join(errors)
    return row


def load_channel_and_reference(est_spec, ref_path):
    """Loader for score_pairs: est_spec = (path, channel) or a path (channel 0); both read at 16 kHz."""
    from hwkd.audio.io import read_audio
    est_path, channel = est_spec if isinstance(est_spec, tuple) else (est_spec, 0)
    est, _ = read_audio(est_path, sample_rate=SR)
    ref, _ = read_audio(ref_path, sample_rate=SR)
    return est[min(channel, est.shape[0] - 1)], ref[0], SR


def _score_job(job):
    load, est_spec, ref_spec, clip_id, dnsmos = job
    try:
        est, ref, sr = load(est_spec, ref_spec)
    except Exception as exc:
        from hwkd.errors import HwkdError
        msg = exc.what if isinstance(exc, HwkdError) else f"{type(exc).__name__}: {exc}"
        row = {m: None for m in BASE_METRICS + (DNSMOS_METRICS if dnsmos else ())}
        row["status"] = f"unreadable: {msg}"
        return {"id": clip_id, **row}
    return {"id": clip_id, **score_clip(est, ref, sr, dnsmos)}


def _init_worker(parent: int):
    # one BLAS thread per process: the pool is the parallelism (oversubscribing 2 cores costs ~30 %)
    from threadpoolctl import threadpool_limits

    from hwkd.sysinfo import exit_with_parent
    threadpool_limits(1)
    exit_with_parent(parent)                   # a kill -9 of the scoring process leaves no worker behind


def score_pairs(jobs_list: list[tuple], load, jobs: int | None = None, dnsmos: bool = False,
                progress: bool = False, desc: str = "metrics") -> list[dict]:
    """Score many clips in parallel.

    jobs_list: [(est_spec, ref_spec, clip_id)]; load(est_spec, ref_spec) -> (est, ref, sr) runs in the
    worker (so audio is read in parallel too); it must be a picklable top-level function.
    Rows come back in the input order.
    """
    jobs = jobs or os.cpu_count() or 1
    work = [(load, e, r, cid, dnsmos) for e, r, cid in jobs_list]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(work), unit="clip", desc=desc, dynamic_ncols=True)
    rows = []
    if jobs == 1 or len(work) <= 1:
        for w in work:
            rows.append(_score_job(w))
            if bar:
                bar.update()
    else:
        chunk = max(1, min(8, len(work) // (jobs * 4)))
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork"),
                                 initializer=_init_worker, initargs=(os.getpid(),)) as pool:
            for row in pool.map(_score_job, work, chunksize=chunk):
                rows.append(row)
                if bar:
                    bar.update()
    if bar:
        bar.close()
    return rows


def mean_ci(values) -> dict:
    """{"mean", "ci95" (Student-t half-width; None for one value), "n"} of a list of numbers."""
    from scipy import stats
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    ci = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "ci95": ci, "n": int(len(v))}


def summarize(rows: list[dict], metrics=None) -> dict:
    """Mean and 95 % confidence half-width (Student t) per metric over the clips that have a value."""
    metrics = metrics or [m for m in BASE_METRICS + DNSMOS_METRICS if any(m in r for r in rows)]
    out = {}
    for m in metrics:
        out[m] = mean_ci([r[m] for r in rows if r.get(m) is not None])
    statuses: dict = {}
    for r in rows:
        key = r["status"].split(":")[0]
        statuses[key] = statuses.get(key, 0) + 1
    out["status_counts"] = statuses
    return out
