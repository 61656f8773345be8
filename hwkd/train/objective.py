"""Distillation as a trainer objective: L = L_SE(student) + λ · L_KD(student taps, teacher taps).

The teacher is frozen (eval mode, no gradient); the scheme's own modules train with the student. A mono
teacher can teach an Ambisonics student: it is given the W channel (channel 0).

λ, the spec's open weight, is balanced per run by default (`balance`): on the first batches of the run, at
the student's initial weights, λ is set so that λ·‖∇θ L_KD‖ = KD_GRAD_RATIO · ‖∇θ L_SE‖, θ being the
student's parameters (not the scheme's own modules). Why: the schemes' losses differ in scale by five orders
of magnitude (at the old fixed λ = 0.1 the KD gradient was 0.42 % of the SE gradient for response KD and
5·10⁻⁸ for AT on a kd-medium student, benchmarks/results/kd_grad_ratio_before.json: most schemes did
nothing), and the scale also moves with the segment length, the student's width and the
teacher. A gradient-ratio rule gives every scheme the same say in the first updates, whatever its units, so a
comparison compares what the schemes ask for, not how their losses happen to be scaled. The ratio is
KD_GRAD_RATIO (0.5: the KD term pulls half as hard as the task — see README "KD weights" for the
measurement); `lam=` fixes λ by hand instead. The measured norms and the chosen λ are recorded with the run.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwkd.kd.base import create_distiller
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.enhancer import Enhancer
from hwkd.train.losses import se_loss
from hwkd.train.shared import place, teacher_taps

KD_GRAD_RATIO = 0.5        # λ·‖∇L_KD‖ / ‖∇L_SE‖ on the student at its initial weights (balanced default)


def _statistic(values: list, statistic: str) -> float:
    import statistics
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic {statistic!r}: mean or median")
    return statistics.median(values) if statistic == "median" else sum(values) / len(values)


def check_teacher(tc, sc, student: str = "student", fix: str = "choose a student with the teacher's input "
                                                                  "channels and hop", schemes=(),
                  response_fix: str | None = None) -> None:
    """The teacher must see the student's STFT and input; a mono teacher may teach an Ambisonics student (it
    sees the W channel, channel 0, its reference). Response KD (among `schemes`) compares the two masks, so
    it also needs one output form (mask_mode) on both sides (`response_fix`: what to do then, in the caller's
    terms)."""
    mono_teacher = tc.in_channels == 1 and sc.in_channels == 4
    from hwkd.errors import HwkdError
    if (tc.hop, tc.n_fft) != (sc.hop, sc.n_fft) or (tc.in_channels != sc.in_channels and not mono_teacher):
        raise HwkdError(f"teacher (input channels {tc.in_channels}, hop {tc.hop}) and {student} "
                        f"(input channels {sc.in_channels}, hop {sc.hop}) must share input and STFT", fix)
    if "response" in schemes:
        check_response_form(tc.mask_mode, [sc.mask_mode], student, response_fix or
                            f"give the student --mask-mode {tc.mask_mode}, or use a feature scheme (e.g. i2srf-tfckd)")


def check_response_form(teacher_mode: str, student_modes, student: str, fix: str) -> None:
    """Response KD compares the teacher's and the student's masks, so both need one output form (mask_mode);
    `student_modes`: the forms the students may have (a search space's choices)."""
    if set(student_modes) != {teacher_mode}:
        from hwkd.errors import HwkdError
        raise HwkdError(f"response KD compares masks of one form: the teacher's mask_mode is {teacher_mode!r}, "
                        f"{student}'s {', '.join(map(repr, sorted(set(student_modes))))}", fix)


def _grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


class KDObjective:
    def __init__(self, teacher: DPDCRN, student: DPDCRN, scheme: str, batch_size: int, segment_samples: int,
                 lam: float | None = None, **options):
        tc, sc = teacher.cfg, student.cfg
        check_teacher(tc, sc)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_enhancer = Enhancer(self.teacher)
        self.name = scheme
        self.lam = lam
        self.lam_record: dict = {"lam": lam, "rule": "fixed"} if lam is not None else {}
        x = torch.zeros(batch_size, 2 * sc.in_channels, -(-segment_samples // sc.hop), 257)
        with torch.no_grad():          # (the taps' shapes: each network where it is, e.g. a teacher on a GPU)
            _, st = student(x.to(next(student.parameters()).device), return_taps=True)
            _, tt = self.teacher(x[:, : 2 * tc.in_channels].to(next(self.teacher.parameters()).device),
                                 return_taps=True)
        self.distiller = create_distiller(scheme, st, tt, **options)

    def modules(self) -> list[nn.Module]:
        return [self.distiller]

    def losses(self, enhancer: Enhancer, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(L_SE, L_KD, parts) for one batch."""
        est, s_taps = enhancer(batch["noisy"], return_taps=True)
        place(self.teacher_enhancer, batch["noisy"].device)     # (moved only when elsewhere: threads share it)
        # computed here, or taken from the runs training beside this one on the same batches (hwkd.train.shared)
        t_taps = teacher_taps(self.teacher_enhancer, batch["noisy"][:, : self.teacher.cfg.in_channels])
        l_se, parts = se_loss(est, batch["clean"], enhancer.n_fft, enhancer.hop)
        l_kd, kd_parts = self.distiller(s_taps, t_taps)
        return l_se, l_kd, {**parts, **kd_parts}

    def batch_grad_norms(self, enhancer: Enhancer, batches: list[dict]) -> tuple[list, list]:
        """‖∇θ L_SE‖ and ‖∇θ L_KD‖ over the student's parameters θ, per batch."""
        params = [p for p in enhancer.net.parameters() if p.requires_grad]
        se, kd = [], []
        for b in batches:
            l_se, l_kd, _ = self.losses(enhancer, b)
            se.append(_grad_norm(l_se, params))
            kd.append(_grad_norm(l_kd, params))
        return se, kd

    def grad_norms(self, enhancer: Enhancer, batches: list[dict], statistic: str = "mean") -> tuple[float, float]:
        """The mean (or median) over batches of ‖∇θ L_SE‖ and ‖∇θ L_KD‖."""
        return tuple(_statistic(v, statistic) for v in self.batch_grad_norms(enhancer, batches))

    def balance(self, enhancer: Enhancer, batches: list[dict], ratio: float = KD_GRAD_RATIO,
                statistic: str = "mean") -> dict:
        """Set λ so that λ·‖∇L_KD‖ = ratio·‖∇L_SE‖ on these batches, each norm the mean or the median of its
        per-batch norms (the median: a batch whose one high-SNR item spikes ‖∇L_SE‖ does not set λ); returns the
        record kept with the run."""
        se, kd = self.batch_grad_norms(enhancer, batches)
        g_se, g_kd = _statistic(se, statistic), _statistic(kd, statistic)
        if not (g_kd > 0 and math.isfinite(g_kd)) or not (g_se > 0 and math.isfinite(g_se)):
            raise FloatingPointError(f"cannot balance λ for {self.name}: ‖∇L_SE‖ = {g_se}, ‖∇L_KD‖ = {g_kd}")
        self.lam = ratio * g_se / g_kd
        self.lam_record = {"lam": self.lam, "rule": "grad-ratio", "target_ratio": ratio,
                           "grad_norm_se": g_se, "grad_norm_kd": g_kd, "batches": len(batches),
                           "statistic": statistic, "batch_grad_norms_se": [float(f"{g:.4g}") for g in se],
                           "batch_grad_norms_kd": [float(f"{g:.4g}") for g in kd]}
        return self.lam_record

    def __call__(self, enhancer: Enhancer, batch: dict) -> tuple[torch.Tensor, dict]:
        if self.lam is None:
            raise RuntimeError("KDObjective.lam is not set: call balance() first or pass lam=")
        l_se, l_kd, parts = self.losses(enhancer, batch)
        return l_se + self.lam * l_kd, {**parts, "se": float(l_se.detach())}
