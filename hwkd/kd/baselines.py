"""Baseline KD schemes under the same interface, adapted to [B, C, T, W] features.

- `response`: output KD — MSE between the student's and the teacher's complex masks (the 'mask' tap,
  [B, 2, T, 257] on both sides, so no adapter).
- `fitnet`: hint MSE on the last tap of each set (enc-3, O_L, dec-1; all 64 bins) through a learned 1×1
  conv adapter from the student's to the teacher's width.
- `at`: attention transfer — per tap, the channel-mean of squared activations gives a [T, W] map, flattened
  and L2-normalised; MSE between student and teacher maps of the same position (enc-1..3, O_L↔O_L,
  dec-1..3; positions share W, so no adapter).
- `pkt-frame`: the authors' earlier frame-similarity probabilistic KD — the time-stream distributions of
  I²SRF-TFCKD (cosine similarity between frames, row-normalised), KL(P_T ‖ P_S) for taps of the same
  position, no calibration and no cross-layer pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwkd.kd.base import Distiller, register
from hwkd.kd.i2srf import EPS, frame_matrix, time_distribution


def _same_position(student: dict, teacher: dict) -> list[tuple[Tensor, Tensor]]:
    """enc-k ↔ enc-k, O_L ↔ O_L, dec-k ↔ dec-k."""
    pairs = list(zip(student["enc"], teacher["enc"])) + [(student["mid"][-1], teacher["mid"][-1])]
    return pairs + list(zip(student["dec"], teacher["dec"]))


@register("response")
class ResponseKD(Distiller):
    def __init__(self, student_taps, teacher_taps):
        super().__init__()

    def forward(self, student, teacher):
        loss = F.mse_loss(student["dec"][-1], teacher["dec"][-1].detach())
        return loss, {"kd": float(loss.detach())}


@register("fitnet")
class FitNet(Distiller):
    def __init__(self, student_taps, teacher_taps):
        super().__init__()
        s, t = self._hints(student_taps), self._hints(teacher_taps)
        self.adapters = nn.ModuleList(nn.Conv2d(a.shape[1], b.shape[1], 1) for a, b in zip(s, t))

    @staticmethod
    def _hints(taps):
        return [taps["enc"][-1], taps["mid"][-1], taps["dec"][0]]

    def forward(self, student, teacher):
        loss = sum(F.mse_loss(a(s), t.detach()) for a, s, t in
                   zip(self.adapters, self._hints(student), self._hints(teacher))) / 3
        return loss, {"kd": float(loss.detach())}


def _attention_map(f: Tensor) -> Tensor:
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1, eps=EPS)


@register("at")
class AttentionTransfer(Distiller):
    def __init__(self, student_taps, teacher_taps):
        super().__init__()

    def forward(self, student, teacher):
        pairs = _same_position(student, teacher)
        loss = sum((_attention_map(s) - _attention_map(t.detach())).pow(2).mean() for s, t in pairs) / len(pairs)
        return loss, {"kd": float(loss.detach())}


@register("pkt-frame")
class FrameSimilarityKD(Distiller):
    def __init__(self, student_taps, teacher_taps):
        super().__init__()

    def forward(self, student, teacher):
        pairs = _same_position(student, teacher)
        loss = 0.0
        for s, t in pairs:
            with torch.no_grad():
                pt = time_distribution(frame_matrix(t.detach()))
            ps = time_distribution(frame_matrix(s))
            loss = loss + (pt * (torch.log(pt + EPS) - torch.log(ps + EPS))).sum(-1).mean()
        loss = loss / len(pairs)
        return loss, {"kd": float(loss.detach())}
