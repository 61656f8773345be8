"""Distillation as a trainer objective: L = L_SE(student) + λ · L_KD(student taps, teacher taps).

The teacher is frozen (eval mode, no gradient); the scheme's own modules train with the student. A mono
teacher can teach an Ambisonics student: it is given the W channel (channel 0).
λ (default 0.1 here) is the open weight of the spec; with I²SRF-TFCKD's Σ over frames the KD term grows
with the segment length, so λ is tied to the segment length it was tuned for (or use normalize_t).
"""

from __future__ import annotations

import torch
from torch import nn

from hwkd.kd.base import create_distiller
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.enhancer import Enhancer
from hwkd.train.losses import se_loss


class KDObjective:
    def __init__(self, teacher: DPDCRN, student: DPDCRN, scheme: str, batch_size: int, segment_samples: int,
                 lam: float = 0.1, **options):
        tc, sc = teacher.cfg, student.cfg
        # a mono teacher may teach an Ambisonics student: it sees the W channel (channel 0), its reference
        mono_teacher = tc.in_channels == 1 and sc.in_channels == 4
        if (tc.hop, tc.n_fft) != (sc.hop, sc.n_fft) or (tc.in_channels != sc.in_channels and not mono_teacher):
            from hwkd.errors import HwkdError
            raise HwkdError(f"teacher (input channels {tc.in_channels}, hop {tc.hop}) and student "
                            f"(input channels {sc.in_channels}, hop {sc.hop}) must share input and STFT",
                            "choose a student with the teacher's input channels and hop")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_enhancer = Enhancer(self.teacher)
        self.name = scheme
        self.lam = lam
        x = torch.zeros(batch_size, 2 * sc.in_channels, -(-segment_samples // sc.hop), 257)
        with torch.no_grad():
            _, st = student(x, return_taps=True)
            _, tt = self.teacher(x[:, : 2 * tc.in_channels], return_taps=True)
        self.distiller = create_distiller(scheme, st, tt, **options)

    def modules(self) -> list[nn.Module]:
        return [self.distiller]

    def __call__(self, enhancer: Enhancer, batch: dict) -> tuple[torch.Tensor, dict]:
        est, s_taps = enhancer(batch["noisy"], return_taps=True)
        self.teacher_enhancer.to(batch["noisy"].device)
        with torch.no_grad():
            _, t_taps = self.teacher_enhancer(batch["noisy"][:, : self.teacher.cfg.in_channels], return_taps=True)
        l_se, parts = se_loss(est, batch["clean"], enhancer.n_fft, enhancer.hop)
        l_kd, kd_parts = self.distiller(s_taps, t_taps)
        return l_se + self.lam * l_kd, {**parts, "se": float(l_se.detach()), **kd_parts}
