"""Knowledge-distillation schemes: loss objects over student and teacher feature taps, and their registry.

Importing hwkd.kd registers every built-in scheme (KD_SCHEMES is complete once this package is imported);
hwkd.kd.maths and hwkd.kd.layers hold what the schemes share."""

from hwkd.kd import baselines, i2srf  # noqa: F401  (importing them registers their schemes)
from hwkd.kd.base import KD_SCHEMES, Distiller, create_distiller, register, schemes, uses_teacher

__all__ = ["KD_SCHEMES", "Distiller", "create_distiller", "register", "schemes", "uses_teacher"]
