"""Similarity maths shared by the KD schemes: frame matrices, Gram-based time / "frequency" similarity
distributions (I²SRF-TFCKD's dual streams, also used by the PKT-frame baseline) and the Jeffreys divergence."""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


# -- similarity streams ---------------------------------------------------------------------------

def frame_matrix(f: Tensor) -> Tensor:
    """[B, C, T, W] -> [B, T, C·W]."""
    b, c, t, w = f.shape
    return f.permute(0, 2, 1, 3).reshape(b, t, c * w)


def gram_time(m: Tensor) -> Tensor:
    return m @ m.transpose(1, 2)                                   # [B, T, T]


def gram_freq(m: Tensor) -> Tensor:
    mt = m.transpose(0, 1)                                         # [T, B, D]
    return (mt @ mt.transpose(1, 2)).transpose(0, 1)               # [B, T, B]


def _cos_from_gram(g: Tensor, n_row: Tensor, n_col: Tensor) -> Tensor:
    """Cosine similarity from a Gram matrix and the row / column vectors' norms (F.normalize's eps)."""
    return g / (n_row.clamp_min(EPS)[..., :, None] * n_col.clamp_min(EPS)[..., None, :])


def _rows(s: Tensor) -> Tensor:
    s = (s + 1) / 2
    return s / s.sum(-1, keepdim=True).clamp_min(EPS)


def time_from_gram(g: Tensor) -> Tensor:
    """P_time [B, T, T] from the time Gram matrix M·Mᵀ (its diagonal holds the frames' squared norms)."""
    n = torch.diagonal(g, dim1=1, dim2=2).clamp_min(0).sqrt()      # [B, T]
    return _rows(_cos_from_gram(g, n, n))


def freq_from_gram(g: Tensor) -> Tensor:
    """P_freq [B, T, B] from the per-frame batch Gram matrix (g[b, t, b] is frame t of utterance b's squared norm)."""
    b = g.shape[0]
    n = g[torch.arange(b), :, torch.arange(b)].clamp_min(0).sqrt()   # [B, T]: ‖M[b, t]‖
    return _rows(g / (n.clamp_min(EPS)[:, :, None] * n.t().clamp_min(EPS)[None, :, :]))


def time_distribution(m: Tensor) -> Tensor:
    """[B, T, D] -> P_time [B, T, T], rows sum to 1."""
    return time_from_gram(gram_time(m))


def freq_distribution(m: Tensor) -> Tensor:
    """[B, T, D] -> P_freq [B, T, B]: per frame, similarity to the same frame of every utterance."""
    return freq_from_gram(gram_freq(m))


def jeffreys(p_t: Tensor, p_s: Tensor) -> Tensor:
    """Element-wise symmetric KL: zero where the distributions agree."""
    return (p_t - p_s) * (torch.log(p_t + EPS) - torch.log(p_s + EPS))
