"""INT8 variants of an exported offline model, with their quality and latency deltas.

Two variants, each beside its FP32 original and measured against it, never assumed faster (on an
AVX2-only CPU INT8 is often slower, see ../shared/spec/measurement.md):

- `onnxruntime`: ONNX Runtime dynamic quantization (weights INT8, activations quantised at run time).
  GRUs have no dynamic-quantised kernel in ONNX Runtime and stay FP32, so the gain is limited to the
  convolutions and linear layers.
- `openvino-nncf`: NNCF post-training static quantization of the OpenVINO IR (weights and activations
  INT8, activation ranges calibrated on the features of real utterances, by default clips of the
  training split so that the quality delta is not scored on the calibration clips).

Quality is compared on real utterances: the FP32 and INT8 models enhance the same clips (STFT/iSTFT in
torch, the network in the runtime) and both are scored with SI-SDR and PESQ-WB against the clean targets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hwkd import SAMPLE_RATE
from hwkd.audio.stft import features, stft
from hwkd.models.enhancer import masked_istft

Net = Callable[[np.ndarray], np.ndarray]       # features [1, 2M, T, 257] -> mask [1, 2, T, 257]


def quantize_offline(onnx_path: Path, out_path: Path) -> Path:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)      # the quantizer warns on the root logger for every tensor it leaves FP32
    try:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return out_path


def clip_features(pairs, in_channels: int, n_fft: int = 512, hop: int = 256) -> list[np.ndarray]:
    """The network inputs of the noisy side of `pairs`: one [1, 2M, T, 257] array per utterance."""
    from hwkd.audio.io import read_audio
    out = []
    for p in pairs:
        x, _ = read_audio(p.noisy, sample_rate=SAMPLE_RATE, channels=in_channels)
        out.append(features(stft(torch.from_numpy(x)[None], n_fft, hop)).numpy())
    return out


def quantize_openvino(ir_path: Path, out_xml: Path, calibration: list[np.ndarray]) -> Path:
    """NNCF post-training quantization of an offline IR, activation ranges from `calibration` inputs."""
    import logging

    import nncf
    import openvino as ov

    from hwkd.hw.runtimes import ov_core
    nncf.set_log_level(logging.ERROR)
    if not calibration:
        raise ValueError("NNCF quantization needs at least one calibration utterance")
    model = ov_core().read_model(str(ir_path))
    # model_type TRANSFORMER (the DPDCRN has attention): NNCF then leaves the elementwise operations (the
    # residual adds, the normalisation's arithmetic) FP32. With the default scheme, which quantises those too,
    # the embedded teacher lost 5.9 dB SI-SDR on 10 val clips; with this one 0.6 dB (34 instead of 85
    # FakeQuantize nodes). The default (performance) preset: symmetric activations.
    q = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                      model_type=nncf.ModelType.TRANSFORMER)
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return out_xml


def ort_net(path: Path, threads: int = 2) -> Net:
    from hwkd.hw.runtimes import ort_session
    sess = ort_session(path, threads=threads)
    return lambda x: sess.run(None, {"features": x})[0]


def ov_net(xml: Path, threads: int = 2) -> Net:
    from hwkd.hw.runtimes import ov_compiled
    comp = ov_compiled(xml, threads=threads)
    return lambda x: comp(x)[comp.outputs[0]]


def enhance_with(net: Net, noisy: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """noisy [M, N] -> enhanced [N] with the network in a runtime."""
    est, _ = masked_istft(torch.from_numpy(noisy)[None],
                          lambda feats: torch.from_numpy(np.ascontiguousarray(net(feats.numpy()))), n_fft, hop)
    return est[0].numpy()


def quality_delta(fp32: Net, other: Net, pairs, in_channels: int, hop: int, name: str = "int8") -> dict:
    """Mean SI-SDR, PESQ-WB and eSTOI of the FP32 network and `other` (INT8, FP16, ...) on `pairs` (hwkd Pair
    objects), and their paired difference. A metric whose package is missing (PESQ has no wheel for every
    Python) is left out and named in "missing"."""
    from importlib.util import find_spec

    from hwkd.audio.io import read_audio
    from hwkd.metrics.quality import pesq_wb, si_sdr
    metrics = {"si_sdr_db": lambda y, r: si_sdr(y, r)}
    if find_spec("pesq"):
        metrics["pesq_wb"] = lambda y, r: pesq_wb(y, r)
    if find_spec("pystoi"):
        from pystoi import stoi
        metrics["estoi"] = lambda y, r: float(stoi(r, y, SAMPLE_RATE, extended=True))
    nets = {"fp32": fp32, name: other}
    scores = {k: {m: [] for m in metrics} for k in nets}
    for p in pairs:
        x, _ = read_audio(p.noisy, sample_rate=SAMPLE_RATE, channels=in_channels)
        ref, _ = read_audio(p.clean, sample_rate=SAMPLE_RATE, channels=1)
        for k, net in nets.items():
            y = enhance_with(net, x, hop=hop)
            for m, f in metrics.items():
                scores[k][m].append(f(y, ref[0]))
    mean = {k: {m: float(np.nanmean(v)) for m, v in d.items()} for k, d in scores.items()}
    return {"clips": len(pairs), **mean, "delta": {m: mean[name][m] - mean["fp32"][m] for m in metrics},
            "missing": [m for m in ("pesq_wb", "estoi") if m not in metrics]}


def int8_variants(fp32_onnx: Path, fp32_ir: Path | None, out_dir: Path, in_channels: int, hop: int, threads: int,
                  protocol, pairs, calib_pairs, progress=print) -> dict:
    """Both INT8 variants of an offline model: output difference on one utterance, offline latency (1 s of
    audio per call, FP32 and INT8 in the same runtime, isolated processes) and, with `pairs`, the quality
    delta. `calib_pairs` calibrate NNCF's activation ranges (no IR or no calibration clips: no NNCF variant)."""
    from hwkd.hw.measure import measure_isolated
    # the output difference on a real utterance: a statically quantised model clips activations to the
    # ranges of real features, so random inputs would measure the clipping, not the quantisation
    probe = (pairs or calib_pairs or [])[:1]
    x = clip_features(probe, in_channels, hop=hop)[0] if probe else \
        np.random.default_rng(0).standard_normal((1, 2 * in_channels, 62, 257)).astype(np.float32)
    out = {}
    variants = [("onnxruntime", "onnxruntime dynamic quantization (QInt8 weights; GRUs stay FP32)")]
    if fp32_ir is not None and calib_pairs:
        variants.append(("openvino-nncf", f"NNCF post-training static quantization (weights and activations INT8), "
                                          f"activation ranges from {len(calib_pairs)} utterances"))
    elif fp32_ir is not None:
        out["openvino-nncf"] = {"skipped": "no calibration utterances for NNCF"}
    for name, how in variants:
        if name == "onnxruntime":
            q = quantize_offline(fp32_onnx, out_dir / "offline-int8.onnx")
            fp, qn = ort_net(fp32_onnx), ort_net(q)
            lat = {k: measure_isolated("onnxruntime", "offline", threads, onnx=p, hop=hop, in_channels=in_channels,
                                       protocol=protocol) for k, p in (("fp32", fp32_onnx), ("int8", q))}
        else:
            q = quantize_openvino(fp32_ir, out_dir / "offline-int8.xml", clip_features(calib_pairs, in_channels,
                                                                                         hop=hop))
            fp, qn = ov_net(fp32_ir), ov_net(q)
            lat = {k: measure_isolated("openvino", "offline", threads, ir=p, hop=hop, in_channels=in_channels,
                                       protocol=protocol) for k, p in (("fp32", fp32_ir), ("int8", q))}
        a, b = fp(x), qn(x)
        res = {"model": str(q), "runtime": how, "max_abs_mask_diff": float(np.abs(a - b).max()),
               "rel_mask_diff": float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)),
               "mask_diff_on": str(probe[0].noisy) if probe else "a random input",
               "latency_offline_1s": {k: {"p50_ms": m.p50_ms, "threads": m.threads, "busy": m.busy,
                                          "how": f"measured here, {m.runtime} {m.version}"} for k, m in lat.items()},
               "latency_ratio_int8_over_fp32": lat["int8"].p50_ms / lat["fp32"].p50_ms}
        if calib_pairs and name == "openvino-nncf":
            res["calibration_clips"] = [str(p.noisy) for p in calib_pairs]
        msg = (f"  int8 {name}: mask diff {res['rel_mask_diff']:.1%} (relative L2), "
               f"latency x{res['latency_ratio_int8_over_fp32']:.2f}")
        if pairs:
            res["quality"] = quality_delta(fp, qn, pairs, in_channels, hop)
            d = res["quality"]["delta"]
            msg += (f", SI-SDR {d['si_sdr_db']:+.2f} dB"
                    + (f", PESQ {d['pesq_wb']:+.3f}" if "pesq_wb" in d else "") + f" on {len(pairs)} clips")
        progress(msg)
        out[name] = res
    return out
