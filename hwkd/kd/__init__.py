"""Knowledge-distillation schemes: loss objects over student and teacher feature taps, and their registry."""

from hwkd.kd.base import KD_SCHEMES, Distiller, create_distiller, register, schemes

__all__ = ["KD_SCHEMES", "Distiller", "create_distiller", "register", "schemes"]
