"""STFT / iSTFT used by every hwkd model, offline and streaming alike.

Framing: the signal is left-padded with n_fft - hop zeros, so frame t covers input samples
[t*hop - (n_fft - hop), t*hop + hop): each new hop of audio completes exactly one frame, which is what a
streaming device sees. Square-root periodic Hann analysis and synthesis windows; the inverse divides the
overlap-added output by the overlap-added squared window, so any hop that keeps that sum non-zero
reconstructs exactly. Algorithmic latency = n_fft samples (one window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def window(n_fft: int, device=None) -> Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device).sqrt()


def n_frames(n_samples: int, hop: int) -> int:
    return -(-n_samples // hop)  # ceil


def stft(x: Tensor, n_fft: int = 512, hop: int = 256) -> Tensor:
    """x [B, M, N] (or [B, N]) -> complex [B, M, T, n_fft//2+1], T = ceil(N / hop)."""
    squeeze = x.dim() == 2
    if squeeze:
        x = x[:, None]
    b, m, n = x.shape
    t = n_frames(n, hop)
    pad_right = t * hop - n
    xp = F.pad(x.reshape(b * m, n), (n_fft - hop, pad_right))
    spec = torch.stft(xp, n_fft, hop, n_fft, window(n_fft, x.device), center=False, return_complex=True)
    spec = spec.reshape(b, m, spec.shape[-2], spec.shape[-1]).transpose(-1, -2)  # [B, M, T, F]
    return spec[:, 0] if squeeze else spec


def istft(spec: Tensor, length: int, n_fft: int = 512, hop: int = 256) -> Tensor:
    """complex [B, T, F] -> [B, length] (inverse of `stft` for one channel)."""
    b, t, _ = spec.shape
    w = window(n_fft, spec.device)
    frames = torch.fft.irfft(spec, n=n_fft, dim=-1) * w                # [B, T, n_fft]
    total = (t - 1) * hop + n_fft
    out = F.fold(frames.transpose(1, 2), (1, total), (1, n_fft), stride=(1, hop)).reshape(b, total)
    norm = F.fold((w ** 2).expand(1, t, n_fft).transpose(1, 2), (1, total), (1, n_fft),
                  stride=(1, hop)).reshape(1, total)
    out = out / norm.clamp_min(1e-8)
    return out[:, n_fft - hop: n_fft - hop + length]


def features(spec: Tensor) -> Tensor:
    """complex [B, M, T, F] -> network input [B, 2M, T, F] (real, imag of each channel in turn)."""
    b, m, t, f = spec.shape
    return torch.stack([spec.real, spec.imag], dim=2).reshape(b, 2 * m, t, f)
