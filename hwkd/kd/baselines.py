"""Baseline KD schemes under the same interface, adapted to [B, C, T, W] features.

- `response`: output KD — MSE between the student's and the teacher's bounded complex masks tanh(|M|)·M/|M|
  (what the mask applies; the 'mask' tap, [B, 2, T, 257] on both sides — or [B, 2M, ...] on both for
  `mask_mode: filter-sum`, or for `steered` [B, 3, ...], the mask and the speech-presence weight sigmoid(p) that
  steers the beam — so no adapter; teacher and student of different mask forms are refused).
- `fitnet`: hint MSE on the last tap of each set (enc-3, O_L, dec-1; all 64 bins) through a learned 1×1
  conv adapter from the student's to the teacher's width.
- `at`: attention transfer — per tap, the channel-mean of squared activations gives a [T, W] map, flattened
  and L2-normalised; the L2 distance (per sample, as in the AT paper) between student and teacher maps of
  the same position (enc-1..3, O_L↔O_L,
  dec-1..3; positions share W, so no adapter).
- `pkt-frame`: the authors' earlier frame-similarity probabilistic KD — the time-stream distributions of
  I²SRF-TFCKD (cosine similarity between frames, row-normalised), KL(P_T ‖ P_S) for taps of the same
  position, no calibration and no cross-layer pairs.
- `semckd`, `reviewkd`: see their classes (per correlated set; adapters / review chains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwkd.kd.base import Distiller, register
from hwkd.kd.layers import ABFUnit
from hwkd.kd.maths import EPS, frame_matrix, time_distribution


def _same_position(student: dict, teacher: dict) -> list[tuple[Tensor, Tensor]]:
    """enc-k ↔ enc-k, O_L ↔ O_L, dec-k ↔ dec-k."""
    pairs = list(zip(student["enc"], teacher["enc"])) + [(student["mid"][-1], teacher["mid"][-1])]
    return pairs + list(zip(student["dec"], teacher["dec"]))


def response_target(tap: Tensor) -> Tensor:
    """What response KD compares of a 'mask' tap: the bounded mask (`bounded_mask`), and for a `steered` model's
    tap [B, 3, T, F] the speech-presence weight sigmoid(p) beside it."""
    if tap.shape[1] % 2:
        return torch.cat([bounded_mask(tap[:, :-1]), torch.sigmoid(tap[:, -1:])], 1)
    return bounded_mask(tap)


def bounded_mask(mask: Tensor, eps: float = 1e-8) -> Tensor:
    """The complex gain the polar mask applies (hwkd.models.dpdcrn.apply_mask): tanh(|M|)·M/|M| per (real, imag)
    pair, [B, 2K, T, F].
    Bounded by 1 in magnitude, unlike the raw pre-activation M (teacher |M| reaches ~4 where tanh is flat)."""
    m = mask.reshape(mask.shape[0], -1, 2, *mask.shape[2:])          # (real, imag) per masked channel
    mag = torch.sqrt(m.pow(2).sum(2, keepdim=True) + eps)
    return (m * (torch.tanh(mag) / mag)).reshape(mask.shape)


@register("none")
class NoKD(Distiller):
    """No distillation: the student trains on the speech-enhancement loss alone, the baseline every scheme is
    compared with. A scheme like the others by name; the trainer runs no teacher and adds no KD term for it."""

    uses_teacher = False

    def __init__(self, student_taps: dict | None = None, teacher_taps: dict | None = None, **options):
        super().__init__()

    def forward(self, student: dict, teacher: dict) -> tuple[Tensor, dict]:
        return torch.zeros(()), {}


@register("response")
class ResponseKD(Distiller):
    """Output KD on what the mask does: MSE between the student's and the teacher's bounded complex gains."""

    def __init__(self, student_taps, teacher_taps):
        super().__init__()
        s, t = student_taps["dec"][-1].shape[1], teacher_taps["dec"][-1].shape[1]
        if s != t:
            from hwkd.errors import HwkdError
            raise HwkdError(f"response KD compares masks of one form: the student's mask tap has {s} channels, "
                            f"the teacher's {t} (their mask_mode differs)",
                            "use a feature scheme for this pair (e.g. i2srf-tfckd), or a teacher of the student's form")

    def forward(self, student, teacher):
        loss = F.mse_loss(response_target(student["dec"][-1]), response_target(teacher["dec"][-1].detach()))
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
        # as in Zagoruyko & Komodakis: the L2 norm of the difference of the normalised maps, per sample
        loss = sum((_attention_map(s) - _attention_map(t.detach())).norm(dim=1).mean() for s, t in pairs) / len(pairs)
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


def _adapter(src: Tensor, dst: Tensor) -> nn.Module:
    """1×1 conv to the teacher's width, then adaptive pooling to its (T, W): [B, Cs, T, Ws] -> [B, Ct, T, Wt]."""
    conv = nn.Conv2d(src.shape[1], dst.shape[1], 1)
    size = tuple(dst.shape[2:])

    class Adapt(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return F.adaptive_avg_pool2d(self.conv(x), size)
    return Adapt()


@register("semckd")
class SemCKD(Distiller):
    """SemCKD (Chen et al., 2021) per correlated set: every student tap is matched to every teacher tap of its
    set through an adapter (1×1 conv + pooling to the teacher's shape); per-sample attention weights over
    teacher taps come from query/key MLPs over the batch Gram matrix of each tap (as in SemCKD); the loss
    is the weighted feature MSE. Like I²SRF-TFCKD, the batch size is fixed at construction."""

    def __init__(self, student_taps, teacher_taps, f: int = 2):
        super().__init__()
        b = student_taps["enc"][0].shape[0]
        self.batch = b
        self.adapters = nn.ModuleDict()
        self.q = nn.ModuleDict()
        self.k = nn.ModuleDict()
        for s in ("enc", "mid", "dec"):
            self.adapters[s] = nn.ModuleList(nn.ModuleList(_adapter(a, t) for t in teacher_taps[s])
                                             for a in student_taps[s])
            self.q[s] = nn.ModuleList(nn.Sequential(nn.Linear(b, f * b), nn.ReLU(), nn.Linear(f * b, f * b))
                                      for _ in student_taps[s])
            self.k[s] = nn.ModuleList(nn.Sequential(nn.Linear(b, f * b), nn.ReLU(), nn.Linear(f * b, f * b))
                                      for _ in teacher_taps[s])

    @staticmethod
    def _gram(x: Tensor) -> Tensor:
        v = F.normalize(x.flatten(1), dim=1, eps=EPS)
        return v @ v.t()

    def forward(self, student, teacher):
        if student["enc"][0].shape[0] != self.batch:
            raise ValueError(f"SemCKD was built for batch {self.batch}, got {student['enc'][0].shape[0]}")
        total, logs = 0.0, {}
        for s in ("enc", "mid", "dec"):
            tt = [t.detach() for t in teacher[s]]
            keys = torch.stack([F.normalize(k(self._gram(t)), dim=-1) for k, t in zip(self.k[s], tt)], 1)
            loss = 0.0
            for i, x in enumerate(student[s]):
                q = F.normalize(self.q[s][i](self._gram(x)), dim=-1)                  # [B, E]
                alpha = torch.softmax((keys @ q[:, :, None]).squeeze(-1), dim=-1)     # [B, N_t]
                for j, t in enumerate(tt):
                    mse = (self.adapters[s][i][j](x) - t).pow(2).flatten(1).mean(1)   # [B]
                    loss = loss + (alpha[:, j] * mse).mean()
            loss = loss / len(student[s])
            logs[f"kd_{s}"] = float(loss.detach())
            total = total + loss
        logs["kd"] = float(total.detach())
        return total, logs


def hcl(student: Tensor, teacher: Tensor, levels=(4, 2, 1)) -> Tensor:
    """ReviewKD's hierarchical context loss: MSE at full resolution and after pooling to coarser grids."""
    loss, weight, norm = F.mse_loss(student, teacher), 1.0, 1.0
    for lv in levels:
        weight /= 2.0
        size = (min(lv, student.shape[2]), min(lv, student.shape[3]))
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size))
        norm += weight
    return loss / norm


@register("reviewkd")
class ReviewKD(Distiller):
    """ReviewKD (Chen et al., 2021) per set: an ABF chain over the student's taps from deep to shallow (the
    'review' direction) produces, at each stage, a feature of the teacher tap's width; each is matched to
    the teacher tap of the same position with the hierarchical context loss. Sets are compared position by
    position, so the middle set uses its last layer (O_L) on both sides."""

    def __init__(self, student_taps, teacher_taps, mid: int = 64):
        super().__init__()
        self.chains = nn.ModuleDict()
        for s in ("enc", "mid", "dec"):
            st, tt = self._deep_first(student_taps, s), self._deep_first(teacher_taps, s)
            self.chains[s] = nn.ModuleList(ABFUnit(a.shape[1], mid, t.shape[1], first=(k == 0))
                                           for k, (a, t) in enumerate(zip(st, tt)))

    @staticmethod
    def _deep_first(taps, s):
        if s == "mid":
            return [taps["mid"][-1]]
        return list(reversed(taps["enc"])) if s == "enc" else list(taps["dec"])  # dec-1 is the deepest

    def forward(self, student, teacher):
        total, logs = 0.0, {}
        for s in ("enc", "mid", "dec"):
            r, loss = None, 0.0
            st, tt = self._deep_first(student, s), self._deep_first(teacher, s)
            for unit, x, t in zip(self.chains[s], st, tt):
                r, out = unit(x, r)
                loss = loss + hcl(out, t.detach())
            loss = loss / len(st)
            logs[f"kd_{s}"] = float(loss.detach())
            total = total + loss
        logs["kd"] = float(total.detach())
        return total, logs
