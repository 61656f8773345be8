"""INT8 variants of an exported offline model, with their quality and latency deltas.

ONNX Runtime dynamic quantization (weights INT8, activations quantised at run time) of the offline model;
GRUs have no dynamic-quantised kernel in ONNX Runtime and stay FP32, so the gain is limited to the
convolutions and linear layers. Nothing is assumed about speed: the delta is measured (on an AVX2-only
CPU INT8 is often slower, see ../shared/spec/measurement.md). Quality is compared on real utterances:
the FP32 and INT8 ONNX models enhance the same clips (STFT/iSTFT in torch, the network in ONNX Runtime)
and both are scored with SI-SDR and PESQ-WB against the clean targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hwkd.audio.stft import features, istft, stft
from hwkd.models.dpdcrn import apply_mask


def quantize_offline(onnx_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    return out_path


def enhance_with_onnx(sess, noisy: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """noisy [M, N] -> enhanced [N] with the network in an ONNX Runtime session."""
    x = torch.from_numpy(noisy)[None]
    spec = stft(x, n_fft, hop)
    mask = torch.from_numpy(sess.run(None, {"features": features(spec).numpy()})[0])
    return istft(apply_mask(mask, spec[:, 0]), x.shape[-1], n_fft, hop)[0].numpy()


def quality_delta(fp32: Path, int8: Path, pairs, in_channels: int, hop: int) -> dict:
    """Mean SI-SDR and PESQ-WB of the FP32 and INT8 models on `pairs` (hwkd Pair objects)."""
    from hwkd.audio.io import read_audio
    from hwkd.hw.export import ort_session
    from hwkd.metrics.quality import pesq_wb, si_sdr
    sessions = {"fp32": ort_session(fp32, threads=2), "int8": ort_session(int8, threads=2)}
    scores = {k: {"si_sdr_db": [], "pesq_wb": []} for k in sessions}
    for p in pairs:
        x, _ = read_audio(p.noisy, sample_rate=16000, channels=in_channels)
        ref, _ = read_audio(p.clean, sample_rate=16000, channels=1)
        for k, sess in sessions.items():
            y = enhance_with_onnx(sess, x, hop=hop)
            scores[k]["si_sdr_db"].append(si_sdr(y, ref[0]))
            scores[k]["pesq_wb"].append(pesq_wb(y, ref[0]))
    mean = {k: {m: float(np.nanmean(v)) for m, v in d.items()} for k, d in scores.items()}
    return {"clips": len(pairs), **mean,
            "delta": {m: mean["int8"][m] - mean["fp32"][m] for m in ("si_sdr_db", "pesq_wb")}}
