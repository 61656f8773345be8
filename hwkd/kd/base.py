"""The distiller interface.

A KD scheme is an nn.Module called with the student's and the teacher's taps (dicts of lists of
[B, C, T, W] features: "enc", "mid", "dec"; see hwkd.models.dpdcrn) and returns (loss, parts), parts being
floats for logging. Its own trainable parts (adapters, calibration MLPs, fusion chains) are its parameters.
The trainer knows no scheme by name; schemes are found by name in KD_SCHEMES.
"""

from __future__ import annotations

from torch import Tensor, nn

KD_SCHEMES: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.scheme = name
        KD_SCHEMES[name] = cls
        return cls
    return deco


class Distiller(nn.Module):
    scheme = "base"
    uses_teacher = True          # False: no teacher runs and no KD term is added (the "none" scheme)

    def forward(self, student: dict[str, list[Tensor]], teacher: dict[str, list[Tensor]]) -> tuple[Tensor, dict]:
        raise NotImplementedError


def schemes() -> dict[str, type]:
    """The registry (complete: the package hwkd.kd, imported before this module, registers the built-in schemes)."""
    return KD_SCHEMES


def uses_teacher(name: str) -> bool:
    """Whether scheme `name` distils from a teacher (every scheme but "none", the plain SE baseline)."""
    from hwkd.errors import HwkdError
    if name not in KD_SCHEMES:
        raise HwkdError(f"unknown KD scheme {name!r}", f"use one of: {', '.join(sorted(KD_SCHEMES))}")
    return KD_SCHEMES[name].uses_teacher


def create_distiller(name: str, student_taps: dict, teacher_taps: dict, **options) -> Distiller:
    """Build a scheme for the tap shapes of one (student, teacher) pair; taps may be example tensors."""
    from hwkd.errors import HwkdError
    if name not in schemes():
        raise HwkdError(f"unknown KD scheme {name!r}", f"use one of: {', '.join(sorted(KD_SCHEMES))}")
    return KD_SCHEMES[name](student_taps, teacher_taps, **options)
