#!/usr/bin/env python3
"""Enhance a WAV file with the ONNX model of this folder, without hwkd: numpy and onnxruntime only.

    python enhance_onnx.py IN.wav OUT.wav [--streaming]

IN.wav: 16-kHz 16-bit PCM, mono (or 4 channels W, Y, Z, X for an Ambisonics model); OUT.wav: mono, 16-kHz,
16-bit PCM. Offline: offline.onnx on the whole file at once. --streaming (causal models): step.onnx one hop at a
time with its states carried from hop to hop, as a device runs it.

What hwkd does around the network (STFT settings from card.json: n_fft 512, hop 256 for the shipped presets):
- STFT: square-root periodic Hann analysis and synthesis windows; the signal is left-padded with n_fft - hop
  zeros (and right-padded to whole hops), so frame t covers samples [t*hop - (n_fft - hop), t*hop + hop) and
  each new hop of audio completes exactly one frame. Algorithmic latency: n_fft samples.
- network input "features" [1, 2M, T, n_fft/2+1]: the real and imaginary parts of each input channel in turn.
- network output "mask" [1, 2, T, n_fft/2+1] (real, imaginary), applied in polar form to channel 0's
  spectrum X: |S| = tanh(|M|)·|X|, angle(S) = angle(X) + angle(M). A multi-channel model with card.json's
  config "mask_mode": "filter-sum" outputs [1, 2M, T, F]: one such pair per input channel, each applied to its
  channel, the results summed. "mask_mode": "steered" (4 channels) outputs [1, 6, T, F]: the pair, applied to the
  beam Σ_m mask[2 + m]·X_m (four real weights, the same in every bin).
- iSTFT: the windowed inverse FFT of each frame, overlap-added, divided by the overlap-added squared window.
- step.onnx: inputs "frame" [1, 2M, 1, F] and the states (each named in its inputs; all start at zeros, a
  growing attention cache starts with length 0 on its time axis); outputs "mask" [1, 2 (or 2M, or 6), 1, F] and the new
  states, named "new_" + the input's name, fed back at the next hop.
"""

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000


def read_wav(path: Path) -> np.ndarray:
    """-> float32 [channels, samples] in [-1, 1)."""
    if not path.is_file():
        sys.exit(f"{path}: no such file")
    try:
        w = wave.open(str(path), "rb")
    except (wave.Error, EOFError) as e:
        sys.exit(f"{path}: not a PCM WAV file ({e}); convert it, e.g. sox IN -r 16000 -b 16 OUT.wav")
    with w:
        if w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
            sys.exit(f"{path}: needs 16-kHz 16-bit PCM WAV (convert it, e.g. sox IN -r 16000 -b 16 OUT.wav)")
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
        return x.reshape(-1, w.getnchannels()).T


def write_wav(path: Path, y: np.ndarray) -> None:
    pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def window(n_fft: int) -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[M, N] -> complex [M, T, n_fft/2+1], T = ceil(N / hop)."""
    t = -(-x.shape[1] // hop)
    xp = np.pad(x, ((0, 0), (n_fft - hop, t * hop - x.shape[1])))
    idx = np.arange(t)[:, None] * hop + np.arange(n_fft)[None, :]
    return np.fft.rfft(xp[:, idx] * window(n_fft), axis=-1)


def features(spec: np.ndarray) -> np.ndarray:
    """complex [M, T, F] -> [1, 2M, T, F] float32."""
    return np.stack([spec.real, spec.imag], axis=1).reshape(1, -1, *spec.shape[1:]).astype(np.float32)


def apply_mask(mask: np.ndarray, spec: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """mask [2K, T, F], spec complex [M, T, F] -> complex [T, F]: channel 0 masked (K = 1), or each of the K = M
    channels masked and the results summed (a `filter-sum` model); a `steered` model's mask [2 + M, T, F] (M = 4)
    masks the beam Σ_m mask[2 + m]·X_m."""
    if mask.shape[0] == spec.shape[0] + 2 == 6:
        spec, mask = (mask[2:] * spec).sum(0, keepdims=True), mask[:2]
    k = mask.shape[0] // 2
    m = mask.reshape(k, 2, *mask.shape[1:])
    mag = np.sqrt(m[:, 0] ** 2 + m[:, 1] ** 2 + eps)
    return (spec[:k] * (np.tanh(mag) / mag) * (m[:, 0] + 1j * m[:, 1])).sum(0)


def istft(spec: np.ndarray, length: int, n_fft: int, hop: int) -> np.ndarray:
    """complex [T, F] -> [length]."""
    t = spec.shape[0]
    w = window(n_fft)
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * w
    out = np.zeros((t - 1) * hop + n_fft)
    norm = np.zeros_like(out)
    for k in range(t):
        out[k * hop:k * hop + n_fft] += frames[k]
        norm[k * hop:k * hop + n_fft] += w ** 2
    return (out / np.maximum(norm, 1e-8))[n_fft - hop:n_fft - hop + length]


def masks_offline(feats: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(HERE / "offline.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(["mask"], {"features": feats})[0][0]


def masks_streaming(feats: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(HERE / "step.onnx"), providers=["CPUExecutionProvider"])
    ins = sess.get_inputs()[1:]
    states = {i.name: np.zeros([d if isinstance(d, int) and d >= 0 else 0 for d in i.shape], np.float32)
              for i in ins}
    outs = ["mask"] + [f"new_{i.name}" for i in ins]
    masks = []
    for t in range(feats.shape[2]):                      # one hop in, one mask frame out
        res = sess.run(outs, {"frame": feats[:, :, t:t + 1], **states})
        masks.append(res[0][0])
        states = {i.name: v for i, v in zip(ins, res[1:])}
    return np.concatenate(masks, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--streaming", action="store_true", help="step.onnx hop by hop (causal models)")
    a = ap.parse_args()
    if not (HERE / "card.json").is_file():
        sys.exit(f"no card.json beside {Path(__file__).name}: run the copy in a `hwkd pick` folder")
    cfg = json.loads((HERE / "card.json").read_text())["config"]
    n_fft, hop = cfg.get("n_fft", 512), cfg["hop"]
    x = read_wav(a.input)
    if x.shape[0] != cfg["in_channels"]:
        sys.exit(f"{a.input} has {x.shape[0]} channel(s); this model takes {cfg['in_channels']}")
    if a.streaming and not (HERE / "step.onnx").is_file():
        sys.exit("no step.onnx in this folder: the model is not causal; run without --streaming")
    spec = stft(x, n_fft, hop)
    mask = (masks_streaming if a.streaming else masks_offline)(features(spec))
    write_wav(a.output, istft(apply_mask(mask, spec), x.shape[1], n_fft, hop))


if __name__ == "__main__":
    main()
