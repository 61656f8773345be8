"""The speech-enhancement loss.

L_SE = -SI-SDR(est, clean) / 10  +  10 * [0.7 * MSE(|S|^0.3, |Ŝ|^0.3) + 0.3 * MSE(S^c, Ŝ^c)]

where S^c = |S|^0.3 · e^{j∠S} is the power-law compressed complex spectrum (c = 0.3, as in the DNS
challenge systems). SI-SDR (zero-mean, per utterance, averaged over the batch) drives waveform fidelity;
the compressed spectral terms keep the level and the low-energy bins honest, which SI-SDR alone ignores.
Both parts are O(1) with these weights at the start of training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hwkd.audio.stft import stft


def neg_si_sdr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    a = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    t = a * ref
    return -10 * torch.log10((t.pow(2).sum(-1) + eps) / ((est - t).pow(2).sum(-1) + eps))


def compressed_spectral(est: Tensor, ref: Tensor, n_fft: int = 512, hop: int = 256, c: float = 0.3) -> Tensor:
    se, sr = stft(est, n_fft, hop), stft(ref, n_fft, hop)
    me, mr = (se.abs() + 1e-8) ** c, (sr.abs() + 1e-8) ** c
    ce, cr = me * torch.exp(1j * se.angle()), mr * torch.exp(1j * sr.angle())
    return 0.7 * (me - mr).pow(2).mean() + 0.3 * (ce - cr).abs().pow(2).mean()


def se_loss(est: Tensor, ref: Tensor, n_fft: int = 512, hop: int = 256) -> tuple[Tensor, dict]:
    sdr = neg_si_sdr(est, ref).mean()
    spec = compressed_spectral(est, ref, n_fft, hop)
    loss = sdr / 10 + 10 * spec
    return loss, {"neg_si_sdr": float(sdr.detach()), "spec": float(spec.detach())}
