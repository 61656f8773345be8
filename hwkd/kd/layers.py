"""Modules shared by the KD schemes: the attention-based fusion unit (ReviewKD's ABF, which I²SRF-TFCKD's
recursive fusion chains are built of)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ABFUnit(nn.Module):
    """Attention-based fusion: R_k = a⊙X_k + b⊙resize(R_{k-1}); output O_k = PReLU(IN(conv3x3(R_k))).

    Only the chain's last unit has the output conv: the set's representative is the last O_k, and the
    intermediate O_k feed nothing (R_k is what passes on), so computing them would only cost time (the
    3x3 convs at 257 bins were most of a training step)."""

    def __init__(self, c_in: int, mid: int, c_out: int, first: bool, last: bool = True):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.InstanceNorm2d(mid, affine=True),
                                 nn.PReLU(mid))
        self.att = None if first else nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid())
        self.out = nn.Sequential(nn.Conv2d(mid, c_out, 3, padding=1, bias=False),
                                 nn.InstanceNorm2d(c_out, affine=True), nn.PReLU(c_out)) if last else None

    def forward(self, f: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor | None]:
        x = self.inp(f)
        if self.att is None or prev is None:
            r = x
        else:
            p = F.interpolate(prev, size=x.shape[-2:], mode="nearest")
            ab = self.att(torch.cat([x, p], dim=1))
            r = ab[:, :1] * x + ab[:, 1:] * p
        return r, (self.out(r) if self.out is not None else None)
